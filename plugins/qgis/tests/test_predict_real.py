"""End to end: "Predict segmentation" with a tiny model trained by the real ``geoalps train``.

The model is trained for one step on the small RGB sample scene (quality is irrelevant here);
what is checked is the plumbing: the class raster on the scene's grid with its palette, the
optional polygons, and the class names travelling from the ground truth through the model into
the raster's tags, where the plugin reads them.
"""
from __future__ import annotations

import subprocess
import time

import processing
import pytest
from qgis.core import QgsCoordinateReferenceSystem, QgsRasterLayer, QgsVectorLayer

from conftest import REPO, require_real_cli
from geoalps_processing.outputs import _recorded_classes, apply_palette
from geoalps_processing.settings import child_environment, command_prefix
from helpers import RecordingFeedback

SCENE = REPO / "sample_data" / "scene_rgb_u8.tif"
TRUTH = REPO / "sample_data" / "scene_rgb_u8.gt.tif"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    cli = require_real_cli()
    if not (SCENE.is_file() and TRUTH.is_file()):
        pytest.skip(f"{SCENE} or its ground truth missing")
    model = str(tmp_path_factory.mktemp("model") / "tiny.pt")
    done = subprocess.run(
        command_prefix(cli) + [
            "train", "--images", str(SCENE), "--labels", str(TRUTH), "-o", model,
            "--model", "tiny", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1",
            "--quiet",
        ],
        env=child_environment(), capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"geoalps train failed: {done.stderr[-1500:]}")
    return model


@pytest.mark.slow  # about 1 minute on 2 busy cores: skip with scripts/test_qgis.sh -m "not slow"
def test_predict_writes_a_paletted_class_raster_and_polygons(qgis_app, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CLI", require_real_cli())
    params = {
        "MODEL": tiny_model, "INPUT": str(SCENE),
        "OUTPUT": str(tmp_path / "pred.tif"), "POLYGONS": str(tmp_path / "pred.gpkg"),
    }
    feedback = RecordingFeedback()
    started = time.monotonic()
    results = processing.run("geoalps:predict", params, feedback=feedback)
    print(f"predict on the RGB sample scene took {time.monotonic() - started:.1f} s")

    assert feedback.progress and max(feedback.progress) == 100.0
    raster = QgsRasterLayer(results["OUTPUT"], "pred", "gdal")
    scene = QgsRasterLayer(str(SCENE), "scene", "gdal")
    assert raster.isValid()
    assert raster.crs() == scene.crs() == QgsCoordinateReferenceSystem("EPSG:3857")
    assert (raster.width(), raster.height(), raster.extent()) == (
        scene.width(), scene.height(), scene.extent()
    )
    assert apply_palette(raster)
    assert raster.renderer().type() == "paletted"
    assert 2 <= len(raster.renderer().classes()) < 256

    polygons = QgsVectorLayer(results["POLYGONS"], "pred", "ogr")
    assert polygons.isValid() and polygons.featureCount() > 0
    assert polygons.crs() == scene.crs()
    del raster, scene, polygons


def _truth_class_names() -> list[str]:
    """The sample ground truth's names: its CLASS_NAMES dataset tag (comma separated), via QGIS's GDAL."""
    from osgeo import gdal

    dataset = gdal.Open(str(TRUTH))
    names = dataset.GetMetadataItem("CLASS_NAMES") or ""
    dataset = None
    return [n.strip() for n in names.split(",") if n.strip()]


@pytest.mark.slow
def test_predicted_raster_names_its_classes_the_way_the_plugin_reads_them(qgis_app, tiny_model, tmp_path):
    # The real CLI in its own environment writes the raster; the QGIS side reads it with QGIS's
    # GDAL only (band-1 n_classes and ';'-joined class_names: geoalps/outputs/raster.py's contract).
    out = tmp_path / "pred.tif"
    done = subprocess.run(
        command_prefix(require_real_cli()) + ["predict", tiny_model, str(SCENE), "-o", str(out), "--quiet"],
        env=child_environment(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    truth_names = _truth_class_names()
    n_classes, names = _recorded_classes(str(out))
    assert len(truth_names) >= n_classes >= 2
    assert names == truth_names[:n_classes]

    for sidecar in (True, False):  # the .qml sidecar, then the colour table labelled from the tags
        if not sidecar:
            (tmp_path / "pred.qml").unlink()
        options = QgsRasterLayer.LayerOptions()
        options.loadDefaultStyle = False  # as Processing loads results
        layer = QgsRasterLayer(str(out), "pred", "gdal", options)
        assert apply_palette(layer)
        classes = layer.renderer().classes()
        assert [int(c.value) for c in classes] == list(range(n_classes))
        assert [c.label for c in classes] == names, sidecar
        del layer
