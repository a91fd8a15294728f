"""The colours QGIS shows for geoalps outputs do not move when classes are named: with the real
geoalps, a pseudo-class loaded through the plugin's styling (outputs.py: the GeoPackage's
default style, the raster's .qml sidecar or colour table) has the same RGB before naming and
after, though naming renumbers it; a merged class shows its first pseudo-class's colour.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from qgis.core import QgsRasterLayer, QgsVectorLayer

from conftest import require_real_cli, require_sample_scene
from geoalps_processing.outputs import apply_default_vector_style, apply_palette

CLASSES = 7
#: Pseudo-class -> class id after naming 0=field,2=field,6=shrub: class 5 becomes id 4.
CLASS_ID = {0: 0, 1: 1, 2: 0, 3: 2, 4: 3, 5: 4, 6: 5}


def _geoalps(cli: str, *args) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("PROJ_", "GDAL_"))}
    done = subprocess.run([cli, *map(str, args)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _vector_colours(path) -> dict[int, tuple[int, int, int]]:
    options = QgsVectorLayer.LayerOptions()
    options.loadDefaultStyle = False  # as Processing loads results; the plugin styles them
    layer = QgsVectorLayer(str(path), "labels", "ogr", options)
    assert layer.isValid() and apply_default_vector_style(layer)
    colours = {int(c.value()): c.symbol().color().getRgb()[:3] for c in layer.renderer().categories()}
    del layer
    return colours


def _raster_colours(path) -> dict[int, tuple[int, int, int]]:
    """The palette apply_palette gives: from the .qml sidecar where there is one, else (a copy of
    the raster without it) from the colour table."""
    options = QgsRasterLayer.LayerOptions()
    options.loadDefaultStyle = False
    layer = QgsRasterLayer(str(path), "labels", "gdal", options)
    assert layer.isValid() and apply_palette(layer)
    colours = {int(c.value): c.color.getRgb()[:3] for c in layer.renderer().classes()}
    del layer
    return colours


def test_colours_in_qgis_do_not_move_when_classes_are_named(qgis_app, tmp_path):
    cli = require_real_cli()
    scene = require_sample_scene()
    model = tmp_path / "km.joblib"
    fast = ("--engine", "classical", "--tile-size", "640", "--overlap", "64", "--quiet")
    _geoalps(cli, "label", scene, "-o", tmp_path / "out.gpkg", "--raster-out", tmp_path / "out.tif",
             "--classes", CLASSES, "--kmeans-model", model, *fast)
    shutil.copy(tmp_path / "out.tif", tmp_path / "out_table.tif")
    before = {"layer": _vector_colours(tmp_path / "out.gpkg"), "qml": _raster_colours(tmp_path / "out.tif"),
              "table": _raster_colours(tmp_path / "out_table.tif")}
    _geoalps(cli, "classes", "name", tmp_path / "out.gpkg", "--names", "0=field,2=field,6=shrub",
             "-o", tmp_path / "named.gpkg", "--kmeans-model", model, "--quiet")
    _geoalps(cli, "label", scene, "-o", tmp_path / "again.gpkg", "--raster-out", tmp_path / "again.tif",
             "--kmeans-model", model, *fast)
    shutil.copy(tmp_path / "again.tif", tmp_path / "again_table.tif")
    after = {"named layer": _vector_colours(tmp_path / "named.gpkg"),
             "relabelled layer": _vector_colours(tmp_path / "again.gpkg"),
             "qml": _raster_colours(tmp_path / "again.tif"),
             "table": _raster_colours(tmp_path / "again_table.tif")}
    for place, colours in before.items():
        assert sorted(colours) == list(range(CLASSES)), place
        assert colours == before["layer"], place
    first = {0: 0, 1: 1, 2: 0, 3: 3, 4: 4, 5: 5, 6: 6}  # field's first pseudo-class is 0
    for place, colours in after.items():
        assert len(colours) == len(set(CLASS_ID.values())), place
        for k in range(CLASSES):
            assert colours[CLASS_ID[k]] == before["layer"][first[k]], (place, k)
    assert after["named layer"][CLASS_ID[5]] == (145, 30, 180)  # class 5 stays purple
