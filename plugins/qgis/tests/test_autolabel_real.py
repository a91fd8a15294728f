"""End to end in the QGIS process: "Auto-label raster" on the sample scene with the real geoalps.

Uses the classical engine (no SAM weights needed); one run takes about 25 s on 2 busy cores.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import sqlite3
import time
from collections import Counter

import processing
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

from conftest import require_real_cli, require_sample_scene
from helpers import RecordingFeedback, processes_mentioning

CLASSES = 4


def label_params(scene, out_dir, **extra) -> dict:
    params = {
        "INPUT": str(scene), "BANDS": "", "ENGINE": 2, "CHECKPOINT": None, "MODEL_TYPE": 0,
        "CLASSES": CLASSES, "TILE_SIZE": 512, "OVERLAP": 64, "KMEANS_MODEL": None, "SEED": 0,
        "OUTPUT": str(out_dir / "labels.gpkg"), "RASTER_OUTPUT": str(out_dir / "labels.tif"),
        "KMEANS_MODEL_OUT": None,
    }
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def labelled(qgis_app, tmp_path_factory):
    """One real run, loaded into the project the way the toolbox does it."""
    cli = require_real_cli()
    scene = require_sample_scene()
    out_dir = tmp_path_factory.mktemp("autolabel")
    params = label_params(scene, out_dir)
    feedback = RecordingFeedback()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GEOALPS_CLI", cli)
        started = time.monotonic()
        results = processing.runAndLoadResults("geoalps:autolabel", dict(params), feedback=feedback)
        seconds = time.monotonic() - started
    yield params, results, feedback, seconds
    QgsProject.instance().removeAllMapLayers()


def test_polygon_layer_has_features_crs_and_classes(labelled):
    params, results, _, seconds = labelled
    print(f"autolabel on the sample scene took {seconds:.1f} s")
    assert results["OUTPUT"] == params["OUTPUT"]
    layer = QgsVectorLayer(results["OUTPUT"], "labels", "ogr")
    assert layer.isValid()
    assert layer.featureCount() > 0
    assert results["FEATURE_COUNT"] == layer.featureCount()
    assert layer.crs() == QgsCoordinateReferenceSystem("EPSG:32633")
    index = layer.fields().indexOf("pseudo_class")
    assert index >= 0
    for name in ("instance_id", "score", "area", "scene"):
        assert layer.fields().indexOf(name) >= 0, name
    assert set(layer.uniqueValues(index)) <= set(range(CLASSES))
    # Opened anywhere, the GeoPackage's default style applies: one category per class.
    assert layer.renderer().type() == "categorizedSymbol"
    assert layer.renderer().classAttribute() == "pseudo_class"
    assert [str(c.value()) for c in layer.renderer().categories()] == [str(i) for i in range(CLASSES)]
    del layer


def test_geopackage_is_version_1_2_with_a_default_style(labelled):
    params, _, _, _ = labelled
    con = sqlite3.connect(params["OUTPUT"])
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10200
        rows = con.execute(
            "SELECT f_table_name, useAsDefault FROM layer_styles"
        ).fetchall()
    finally:
        con.close()
    assert ("masks", 1) in rows


def test_class_raster_has_the_scene_grid_and_a_palette(labelled):
    params, results, _, _ = labelled
    raster = QgsRasterLayer(results["RASTER_OUTPUT"], "classes", "gdal")
    scene = QgsRasterLayer(params["INPUT"], "scene", "gdal")
    assert raster.isValid()
    assert raster.crs() == QgsCoordinateReferenceSystem("EPSG:32633")
    assert (raster.width(), raster.height()) == (scene.width(), scene.height())
    assert raster.extent() == scene.extent()
    assert raster.renderer().type() == "paletted"
    assert raster.dataProvider().sourceNoDataValue(1) == 255
    del raster, scene


def test_loaded_layers_are_styled(labelled):
    """runAndLoadResults goes through the post-processors, as the toolbox and the modeler do."""
    layers = list(QgsProject.instance().mapLayers().values())
    vectors = [layer for layer in layers if isinstance(layer, QgsVectorLayer)]
    rasters = [layer for layer in layers if isinstance(layer, QgsRasterLayer)]
    assert len(vectors) == 1 and len(rasters) == 1
    assert vectors[0].renderer().type() == "categorizedSymbol"
    assert len(vectors[0].renderer().categories()) == CLASSES
    assert rasters[0].renderer().type() == "paletted"
    assert len(rasters[0].renderer().classes()) == CLASSES  # not the 256 of a GeoTIFF colour table


def test_progress_reached_the_bar_and_the_log(labelled):
    _, _, feedback, _ = labelled
    assert feedback.progress and max(feedback.progress) == 100.0
    assert any("tile 1/" in text for text in feedback.texts)  # e.g. "labelling tile 1/9 ..."
    assert any("geoalps: engine classical" in line for line in feedback.console)


def test_cancel_stops_geoalps_and_leaves_only_the_work_folder(qgis_app, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CLI", require_real_cli())
    scene = require_sample_scene()
    params = label_params(scene, tmp_path)
    feedback = RecordingFeedback(cancel_on_progress=True)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("geoalps:autolabel", params, feedback=feedback)
    assert feedback.progress  # it had started
    assert processes_mentioning(params["OUTPUT"]) == []
    assert os.listdir(tmp_path) == ["labels.gpkg.geoalps-work"]  # for "Resume an interrupted run"


def _polygons(path) -> tuple[int, Counter, list[tuple[int, int]]]:
    """Feature count, pseudo-class histogram and (instance_id, pseudo_class) pairs of a result."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT instance_id, pseudo_class FROM masks ORDER BY instance_id").fetchall()
    finally:
        con.close()
    return len(rows), Counter(c for _, c in rows), rows


@pytest.fixture(scope="module")
def interrupted(qgis_app, tmp_path_factory):
    """An uninterrupted run, and a run of the same settings cancelled after its first tile
    (one worker, so tiles finish one at a time); the second one's work folder is also copied
    beside another output name, for a resume with other settings."""
    cli = require_real_cli()
    scene = require_sample_scene()
    out_dir = tmp_path_factory.mktemp("resume")
    reference = label_params(scene, out_dir, OUTPUT=str(out_dir / "reference.gpkg"), RASTER_OUTPUT=None,
                             WORKERS=1)
    params = {**reference, "OUTPUT": str(out_dir / "labels.gpkg")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GEOALPS_CLI", cli)
        processing.run("geoalps:autolabel", reference, feedback=RecordingFeedback())
        feedback = RecordingFeedback(cancel_on_text="tile 1/")
        with pytest.raises(QgsProcessingException, match="cancelled") as cancelled:
            processing.run("geoalps:autolabel", params, feedback=feedback)
    work = params["OUTPUT"] + ".geoalps-work"
    copy = str(out_dir / "other.gpkg") + ".geoalps-work"
    shutil.copytree(work, copy)
    yield reference, params, work, copy, str(cancelled.value)


def test_a_cancelled_run_keeps_its_finished_tiles(interrupted):
    _, params, work, _, message = interrupted
    assert not os.path.exists(params["OUTPUT"])
    assert os.path.isfile(os.path.join(work, "run.json"))
    assert glob.glob(os.path.join(work, "tiles", "*.npz"))  # at least the first tile
    assert work in message


def test_resume_continues_and_gives_the_uninterrupted_result(interrupted, monkeypatch):
    reference, params, work, _, _ = interrupted
    monkeypatch.setenv("GEOALPS_CLI", require_real_cli())
    feedback = RecordingFeedback()
    results = processing.run("geoalps:autolabel", {**params, "RESUME": True}, feedback=feedback)

    resumed = [line for line in feedback.infos if "tiles resumed from the interrupted run" in line]
    assert len(resumed) == 1, feedback.infos
    count, total = (int(n) for n in re.search(r"(\d+) of (\d+) tiles resumed", resumed[0]).groups())
    print(resumed[0])
    assert 0 < count < total == 9
    assert _polygons(results["OUTPUT"]) == _polygons(reference["OUTPUT"])
    assert results["FEATURE_COUNT"] == _polygons(reference["OUTPUT"])[0]
    assert not os.path.exists(work)  # a finished run removes its work folder


def test_resume_with_other_settings_starts_over_and_says_so(interrupted, monkeypatch):
    _, params, _, copy, _ = interrupted
    monkeypatch.setenv("GEOALPS_CLI", require_real_cli())
    other = {**params, "OUTPUT": copy[:-len(".geoalps-work")], "CLASSES": CLASSES - 1, "RESUME": True}
    feedback = RecordingFeedback()
    results = processing.run("geoalps:autolabel", other, feedback=feedback)

    assert any("cannot be resumed" in line and "other settings (classes)" in line and "starting over" in line
               for line in feedback.infos), feedback.infos
    assert not any("tiles resumed" in line for line in feedback.infos)
    count, classes, _ = _polygons(results["OUTPUT"])
    assert count > 0 and results["FEATURE_COUNT"] == count
    assert set(classes) <= set(range(CLASSES - 1))
    assert not os.path.exists(copy)
