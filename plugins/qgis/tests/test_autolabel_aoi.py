"""The area-of-interest parameters of "Auto-label raster": an extent (with its CRS) or a polygon
layer becomes ``geoalps label --aoi``; with the real geoalps only that window is labelled."""
from __future__ import annotations

import processing
import pytest
from qgis.core import (QgsFeature, QgsGeometry, QgsProcessingException, QgsProject, QgsRasterLayer,
                       QgsRectangle, QgsVectorLayer)

from conftest import require_real_cli, require_sample_scene
from helpers import RecordingFeedback, read_record
from test_runner import autolabel_params


def _aoi_args(argv: list[str]) -> list[str]:
    at = argv.index("--aoi")
    return argv[at:at + (4 if "--aoi-crs" in argv else 2)]


def test_an_extent_becomes_aoi_and_its_crs(qgis_app, fake_cli, tiny_raster, tmp_path):
    params = autolabel_params(tiny_raster, tmp_path, AOI_EXTENT="500005,500020,4999970,4999990 [EPSG:32633]")
    processing.run("geoalps:autolabel", params, feedback=RecordingFeedback())
    assert _aoi_args(read_record(fake_cli)["argv"]) == [
        "--aoi", "500005.0,4999970.0,500020.0,4999990.0", "--aoi-crs", "EPSG:32633"]


def test_a_polygon_layer_becomes_an_aoi_file(qgis_app, fake_cli, tiny_raster, tmp_path):
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "area", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromWkt("POLYGON((500002 4999998, 500030 4999998, 500002 4999970, 500002 4999998))"))
    layer.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(layer)
    try:
        params = autolabel_params(tiny_raster, tmp_path, AOI_LAYER=layer.id())
        processing.run("geoalps:autolabel", params, feedback=RecordingFeedback())
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    argv = read_record(fake_cli)["argv"]
    path = argv[argv.index("--aoi") + 1]
    assert "--aoi-crs" not in argv and path.endswith(".gpkg")
    written = QgsVectorLayer(path, "aoi", "ogr")  # the memory layer, as a file geoalps reads
    assert written.isValid() and written.featureCount() == 1
    assert next(written.getFeatures()).geometry().area() == pytest.approx(28 * 28 / 2)
    del written


def test_extent_and_layer_together_are_refused(qgis_app, fake_cli, tiny_raster, tmp_path):
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "area", "memory")
    QgsProject.instance().addMapLayer(layer)
    try:
        params = autolabel_params(tiny_raster, tmp_path, AOI_LAYER=layer.id(),
                                  AOI_EXTENT="500005,500020,4999970,4999990 [EPSG:32633]")
        with pytest.raises(QgsProcessingException, match="not both"):
            processing.run("geoalps:autolabel", params)
    finally:
        QgsProject.instance().removeMapLayer(layer.id())


def test_the_real_geoalps_labels_only_the_extent(qgis_app, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CLI", require_real_cli())
    scene = require_sample_scene()
    grid = QgsRasterLayer(str(scene), "scene", "gdal")
    left, top = grid.extent().xMinimum(), grid.extent().yMaximum()
    pixel = grid.rasterUnitsPerPixelX()
    # columns 320..960, rows 320..960 of the 1280 px sample scene
    box = QgsRectangle(left + 320 * pixel, top - 960 * pixel, left + 960 * pixel, top - 320 * pixel)
    del grid
    params = autolabel_params(str(scene), tmp_path, CLASSES=4, RASTER_OUTPUT=str(tmp_path / "aoi.tif"),
                              AOI_EXTENT=f"{box.xMinimum()},{box.xMaximum()},{box.yMinimum()},{box.yMaximum()} [EPSG:32633]")
    results = processing.run("geoalps:autolabel", params, feedback=RecordingFeedback())
    raster = QgsRasterLayer(results["RASTER_OUTPUT"], "classes", "gdal")
    assert (raster.width(), raster.height()) == (640, 640) and raster.extent() == box
    polygons = QgsVectorLayer(results["OUTPUT"], "labels", "ogr")
    assert polygons.featureCount() > 0
    for feature in polygons.getFeatures():
        assert box.contains(feature.geometry().boundingBox())
    del raster, polygons
