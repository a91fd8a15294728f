"""geoalps.outputs.style: class colours and the QGIS default style stored in the GeoPackage."""
from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import geopandas as gpd
import pytest
from shapely.geometry import box

from geoalps.outputs.style import STYLE_NAME, class_colors, write_qgis_style


def _write_masks(path, n_classes: int = 4) -> None:
    frame = gpd.GeoDataFrame(
        {
            "instance_id": list(range(8)),
            "pseudo_class": [i % n_classes for i in range(8)],
            "score": [0.9] * 8,
        },
        geometry=[box(i, 0, i + 1, 1) for i in range(8)],
        crs="EPSG:32633",
    )
    frame.to_file(path, layer="masks", driver="GPKG")


def _style_rows(path):
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in con.execute("SELECT * FROM layer_styles")]
    finally:
        con.close()


def test_class_colors_are_distinct_deterministic_and_prefix_stable():
    colors = class_colors(255)
    assert len(set(colors)) == 255
    assert all(0 <= c <= 255 for rgb in colors for c in rgb)
    assert class_colors(255) == colors
    assert class_colors(7) == colors[:7]
    assert class_colors(0) == []


def test_class_colors_rejects_negative():
    with pytest.raises(ValueError):
        class_colors(-1)


def test_write_qgis_style_stores_a_default_categorized_style(tmp_path):
    path = tmp_path / "labels.gpkg"
    _write_masks(path)

    write_qgis_style(str(path), "masks", 4)

    rows = _style_rows(path)
    assert len(rows) == 1
    row = rows[0]
    assert row["f_table_catalog"] == ""
    assert row["f_table_schema"] == ""
    assert row["f_table_name"] == "masks"
    assert row["styleName"] == STYLE_NAME
    assert row["useAsDefault"] == 1
    assert row["update_time"].endswith("Z")

    con = sqlite3.connect(path)
    geometry_column = con.execute(
        "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = 'masks'"
    ).fetchone()[0]
    contents = con.execute(
        "SELECT data_type, identifier FROM gpkg_contents WHERE table_name = 'layer_styles'"
    ).fetchone()
    con.close()
    assert row["f_geometry_column"] == geometry_column
    assert contents == ("attributes", "layer_styles")

    qml = ET.fromstring(row["styleQML"].split("\n", 1)[1])  # skip the DOCTYPE line
    renderer = qml.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol"
    assert renderer.get("attr") == "pseudo_class"
    categories = renderer.findall("categories/category")
    assert [c.get("value") for c in categories] == ["0", "1", "2", "3"]
    assert [c.get("label") for c in categories] == [f"class {i}" for i in range(4)]
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    for class_id, rgb in enumerate(class_colors(4)):
        symbol = symbols[categories[class_id].get("symbol")]
        options = {
            o.get("name"): o.get("value") for o in symbol.findall("layer/Option/Option")
        }
        r, g, b, alpha = (int(v) for v in options["color"].split(","))
        assert (r, g, b) == rgb
        assert 0 < alpha < 255  # see the image through the polygons
        assert options["outline_style"] == "solid"
        assert float(options["outline_width"]) > 0

    sld = ET.fromstring(row["styleSLD"])
    literals = [e.text for e in sld.iter("{http://www.opengis.net/ogc}Literal")]
    assert literals == ["0", "1", "2", "3"]


def test_file_still_reads_as_a_geopackage_layer(tmp_path):
    path = tmp_path / "labels.gpkg"
    _write_masks(path)
    write_qgis_style(str(path), "masks", 4)
    frame = gpd.read_file(path, layer="masks")
    assert len(frame) == 8
    assert frame.crs.to_epsg() == 32633


def test_rewriting_replaces_the_geoalps_style_and_keeps_one_default(tmp_path):
    path = tmp_path / "labels.gpkg"
    _write_masks(path, n_classes=3)
    write_qgis_style(str(path), "masks", 3, class_names=["water", "trees", "roofs"])
    write_qgis_style(str(path), "masks", 5)

    rows = _style_rows(path)
    assert len(rows) == 1
    categories = ET.fromstring(rows[0]["styleQML"].split("\n", 1)[1]).findall(
        "renderer-v2/categories/category"
    )
    assert len(categories) == 5


def test_class_names_must_match_the_class_count(tmp_path):
    path = tmp_path / "labels.gpkg"
    _write_masks(path)
    with pytest.raises(ValueError):
        write_qgis_style(str(path), "masks", 4, class_names=["a", "b"])


def test_unknown_layer_is_an_error(tmp_path):
    path = tmp_path / "labels.gpkg"
    _write_masks(path)
    with pytest.raises(ValueError, match="nope"):
        write_qgis_style(str(path), "nope", 4)


def test_raster_style_sidecar_lists_one_palette_entry_per_class(tmp_path):
    from geoalps.outputs.style import raster_style_path, write_qgis_raster_style

    raster = tmp_path / "labels.tif"
    raster.write_bytes(b"")  # the sidecar does not read the raster
    written = write_qgis_raster_style(raster, 3, class_names=["water", "trees", "roofs"])

    assert written == raster_style_path(raster) == str(tmp_path / "labels.qml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.qml", "labels.tif"]
    text = (tmp_path / "labels.qml").read_text()
    renderer = ET.fromstring(text.split("\n", 1)[1]).find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [e.get("value") for e in entries] == ["0", "1", "2"]
    assert [e.get("label") for e in entries] == ["water", "trees", "roofs"]
    assert [e.get("color") for e in entries] == [
        "#{:02x}{:02x}{:02x}".format(*rgb) for rgb in class_colors(3)
    ]


def test_raster_style_default_names(tmp_path):
    from geoalps.outputs.style import write_qgis_raster_style

    path = write_qgis_raster_style(tmp_path / "x.tif", 2)
    assert 'label="class 1"' in open(path).read()


def test_a_named_class_is_coloured_as_its_first_pseudo_class():
    from geoalps.outputs.style import output_class_colours

    palette = class_colors(8)
    assert output_class_colours(5) == class_colors(5)
    # named classes standing for pseudo-classes 0, 1, 3, 4, 7 (2 merged into 0, 5 and 6 into 4)
    assert output_class_colours(5, [0, 1, 3, 4, 7]) == [palette[k] for k in (0, 1, 3, 4, 7)]
    with pytest.raises(ValueError, match="2 pseudo-classes given for 3 classes"):
        output_class_colours(3, [0, 1])
