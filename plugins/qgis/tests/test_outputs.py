"""outputs.py: loaded results get one legend entry per class, from the sidecar or the colour table."""
from __future__ import annotations

import pytest
from qgis.core import QgsRasterLayer, QgsVectorLayer

from geoalps_processing.outputs import apply_default_vector_style, apply_palette

QML_SIDECAR = """<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology">
 <pipe>
  <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
   <colorPalette>
    <paletteEntry value="0" color="#e6194b" alpha="255" label="water"/>
    <paletteEntry value="1" color="#3cb44b" alpha="255" label="trees"/>
    <paletteEntry value="2" color="#0082c8" alpha="255" label="roofs"/>
   </colorPalette>
  </rasterrenderer>
 </pipe>
</qgis>
"""


@pytest.fixture
def class_raster(qgis_app, tmp_path):
    """A 3-class uint8 raster like geoalps writes: colour table, nodata 255, n_classes tag."""
    from osgeo import gdal

    path = str(tmp_path / "labels.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, 8, 8, 1, gdal.GDT_Byte)
    dataset.SetGeoTransform((0, 1, 0, 8, 0, -1))
    band = dataset.GetRasterBand(1)
    band.SetNoDataValue(255)
    band.Fill(1)
    table = gdal.ColorTable()
    for value, rgb in enumerate([(230, 25, 75), (60, 180, 75), (0, 130, 200)]):
        table.SetColorEntry(value, (*rgb, 255))
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetMetadataItem("n_classes", "3")
    band = None
    dataset = None
    return path


def _load_without_style(path: str) -> QgsRasterLayer:
    options = QgsRasterLayer.LayerOptions()
    options.loadDefaultStyle = False  # as Processing loads results
    return QgsRasterLayer(path, "labels", "gdal", options)


def test_palette_from_the_colour_table_is_cut_to_the_classes(class_raster):
    layer = _load_without_style(class_raster)
    assert layer.renderer().type() == "paletted"
    assert len(layer.renderer().classes()) == 256  # what QGIS makes of a GeoTIFF colour table
    assert apply_palette(layer)
    classes = layer.renderer().classes()
    assert [int(c.value) for c in classes] == [0, 1, 2]
    assert [c.color.getRgb()[:3] for c in classes] == [(230, 25, 75), (60, 180, 75), (0, 130, 200)]
    assert [c.label for c in classes] == ["class 0", "class 1", "class 2"]
    del layer


def test_class_names_tag_labels_the_palette(class_raster):
    from osgeo import gdal

    dataset = gdal.Open(class_raster, gdal.GA_Update)
    dataset.GetRasterBand(1).SetMetadataItem("class_names", "water;trees;roofs")
    dataset = None
    layer = _load_without_style(class_raster)
    assert apply_palette(layer)
    assert [c.label for c in layer.renderer().classes()] == ["water", "trees", "roofs"]
    del layer


def test_sidecar_style_wins(class_raster, tmp_path):
    (tmp_path / "labels.qml").write_text(QML_SIDECAR)
    layer = _load_without_style(class_raster)
    assert apply_palette(layer)
    assert [c.label for c in layer.renderer().classes()] == ["water", "trees", "roofs"]
    del layer


def test_vector_default_style_from_the_geopackage(qgis_app, tmp_path):
    from osgeo import ogr, osr
    from qgis.core import (
        QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsRendererCategory,
    )

    path = str(tmp_path / "labels.gpkg")
    source = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    layer = source.CreateLayer("masks", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("pseudo_class", ogr.OFTInteger))
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetField("pseudo_class", 1)
    feature.SetGeometry(ogr.CreateGeometryFromWkt("POLYGON((0 0,1 0,1 1,0 0))"))
    layer.CreateFeature(feature)
    feature = layer = source = None
    styled = QgsVectorLayer(path, "labels", "ogr")
    categories = [QgsRendererCategory(i, QgsFillSymbol.createSimple({}), str(i)) for i in range(2)]
    styled.setRenderer(QgsCategorizedSymbolRenderer("pseudo_class", categories))
    styled.saveStyleToDatabase("geoalps", "", True, "")
    del styled

    options = QgsVectorLayer.LayerOptions()
    options.loadDefaultStyle = False
    loaded = QgsVectorLayer(path, "labels", "ogr", options)
    assert loaded.renderer().type() == "singleSymbol"
    assert apply_default_vector_style(loaded)
    assert loaded.renderer().classAttribute() == "pseudo_class"
    del loaded
