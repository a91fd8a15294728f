"""Class colours and the QGIS styles that travel with the outputs.

The polygon style lives in the GeoPackage's ``layer_styles`` table (the table QGIS itself writes
with "Save style to database"); the class raster's style is a ``.qml`` sidecar, which QGIS loads
as the default style of a file-based layer. Either way QGIS shows the pseudo-classes coloured
wherever the file is opened, with or without the geoalps plugin. Only the stdlib is used: this
runs right after the outputs are written, on the library side, and must not pull GDAL/QGIS in.
"""
from __future__ import annotations

import colorsys
import os
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timezone

#: Hand-picked, well separated hues for the first classes (most runs use fewer than 12).
_BASE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),    # red
    (60, 180, 75),    # green
    (0, 130, 200),    # blue
    (255, 225, 25),   # yellow
    (245, 130, 48),   # orange
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (240, 50, 230),   # magenta
    (210, 245, 60),   # lime
    (0, 128, 128),    # teal
    (170, 110, 40),   # brown
    (128, 128, 255),  # lavender blue
)

_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949

#: Fill opacity (0-255): the image stays visible under the polygons.
FILL_ALPHA = 140
OUTLINE_WIDTH_MM = 0.3

STYLE_NAME = "geoalps pseudo-classes"

# The schema GDAL creates when QGIS saves a style into a GeoPackage (QGIS 3.22, GDAL 3.6).
_CREATE_LAYER_STYLES = (
    'CREATE TABLE "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
    '"f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256), '
    '"f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT, '
    '"useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30), '
    "\"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)


def class_colors(n: int) -> list[tuple[int, int, int]]:
    """Distinct RGB colours for class ids ``0..n-1``; the same ``n`` always gives the same list.

    The first colours come from a qualitative palette; further ones step the hue by the golden
    ratio (so neighbouring ids never get similar hues) and alternate saturation and brightness.
    A prefix is stable: ``class_colors(5) == class_colors(20)[:5]``, so a class keeps its colour
    when K changes.
    """
    if n < 0:
        raise ValueError(f"number of classes must be >= 0, got {n}")
    colors: list[tuple[int, int, int]] = list(_BASE_PALETTE[:n])
    seen = set(colors)
    step = len(colors)
    while len(colors) < n:
        hue = (step * _GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation = (0.9, 0.6, 0.75)[step % 3]
        value = (0.95, 0.7)[(step // 3) % 2]
        rgb = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, saturation, value))
        step += 1
        if rgb in seen:
            continue
        seen.add(rgb)
        colors.append(rgb)  # type: ignore[arg-type]
    return colors


def output_class_colours(n_classes: int, first_pseudo_classes: Sequence[int] | None = None
                         ) -> list[tuple[int, int, int]]:
    """The colour of each output class id ``0..n_classes-1``: the one function that decides it.

    A class is coloured as the pseudo-class it stands for: ``first_pseudo_classes[i]``, the
    lowest pseudo-class of named class ``i`` (:meth:`geoalps.clustering.names.ClassNames.first_pseudo_classes`),
    or ``i`` itself for plain pseudo-classes. So a pseudo-class keeps its :func:`class_colors`
    colour through naming and a named class takes the colour of its first pseudo-class, alike
    in the layer style, the label raster's colour table and ``.qml``, and the class gallery.
    """
    if first_pseudo_classes is None:
        return class_colors(n_classes)
    firsts = [int(k) for k in first_pseudo_classes]
    if len(firsts) != n_classes:
        raise ValueError(f"{len(firsts)} pseudo-classes given for {n_classes} classes")
    palette = class_colors(max(firsts, default=-1) + 1)
    return [palette[k] for k in firsts]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _outline(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A darker shade of the fill, so touching polygons of one class stay separable."""
    return tuple(int(c * 0.55) for c in rgb)  # type: ignore[return-value]


def _symbol_props(rgb: tuple[int, int, int]) -> dict[str, str]:
    r, g, b = rgb
    orr, og, ob = _outline(rgb)
    return {
        "color": f"{r},{g},{b},{FILL_ALPHA}",
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_unit": "MM",
        "outline_color": f"{orr},{og},{ob},255",
        "outline_style": "solid",
        "outline_width": str(OUTLINE_WIDTH_MM),
        "outline_width_unit": "MM",
        "style": "solid",
    }


def categorized_qml(
    field: str, colors: list[tuple[int, int, int]], class_names: list[str]
) -> str:
    """A QGIS 3.22 QML document: a categorized fill renderer, one category per class id."""
    root = ET.Element("qgis", version="3.22.0", styleCategories="Symbology")
    renderer = ET.SubElement(
        root,
        "renderer-v2",
        type="categorizedSymbol",
        attr=field,
        symbollevels="0",
        enableorderby="0",
        forceraster="0",
        referencescale="-1",
    )
    categories = ET.SubElement(renderer, "categories")
    symbols = ET.SubElement(renderer, "symbols")
    for class_id, (rgb, name) in enumerate(zip(colors, class_names)):
        ET.SubElement(
            categories, "category", value=str(class_id), symbol=str(class_id),
            label=name, render="true",
        )
        symbol = ET.SubElement(
            symbols, "symbol", type="fill", name=str(class_id), alpha="1",
            clip_to_extent="1", force_rhr="0",
        )
        layer = ET.SubElement(symbol, "layer", attrib={
            "class": "SimpleFill", "pass": "0", "locked": "0", "enabled": "1",
        })
        props = _symbol_props(rgb)
        options = ET.SubElement(layer, "Option", type="Map")
        for key, value in props.items():
            ET.SubElement(options, "Option", type="QString", name=key, value=value)
        # QGIS 3.22 still writes (and older readers only read) the flat <prop> form as well.
        for key, value in props.items():
            ET.SubElement(layer, "prop", k=key, v=value)
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    ET.SubElement(root, "layerGeometryType").text = "2"
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def categorized_sld(
    layer: str, field: str, colors: list[tuple[int, int, int]], class_names: list[str]
) -> str:
    """The same categories as an SLD 1.1 document, for tools that read styleSLD (e.g. GeoServer)."""
    sld = "http://www.opengis.net/sld"
    se = "http://www.opengis.net/se"
    ogc = "http://www.opengis.net/ogc"
    ET.register_namespace("", sld)
    ET.register_namespace("se", se)
    ET.register_namespace("ogc", ogc)
    root = ET.Element(f"{{{sld}}}StyledLayerDescriptor", version="1.1.0")
    named = ET.SubElement(root, f"{{{sld}}}NamedLayer")
    ET.SubElement(named, f"{{{se}}}Name").text = layer
    user_style = ET.SubElement(named, f"{{{sld}}}UserStyle")
    ET.SubElement(user_style, f"{{{se}}}Name").text = STYLE_NAME
    fts = ET.SubElement(user_style, f"{{{se}}}FeatureTypeStyle")
    for class_id, (rgb, name) in enumerate(zip(colors, class_names)):
        rule = ET.SubElement(fts, f"{{{se}}}Rule")
        ET.SubElement(rule, f"{{{se}}}Name").text = name
        filt = ET.SubElement(rule, f"{{{ogc}}}Filter")
        equal = ET.SubElement(filt, f"{{{ogc}}}PropertyIsEqualTo")
        ET.SubElement(equal, f"{{{ogc}}}PropertyName").text = field
        ET.SubElement(equal, f"{{{ogc}}}Literal").text = str(class_id)
        polygon = ET.SubElement(rule, f"{{{se}}}PolygonSymbolizer")
        fill = ET.SubElement(polygon, f"{{{se}}}Fill")
        ET.SubElement(fill, f"{{{se}}}SvgParameter", name="fill").text = _hex(rgb)
        ET.SubElement(fill, f"{{{se}}}SvgParameter", name="fill-opacity").text = (
            f"{FILL_ALPHA / 255:.2f}"
        )
        stroke = ET.SubElement(polygon, f"{{{se}}}Stroke")
        ET.SubElement(stroke, f"{{{se}}}SvgParameter", name="stroke").text = _hex(_outline(rgb))
        ET.SubElement(stroke, f"{{{se}}}SvgParameter", name="stroke-width").text = "1"
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _table_exists(con: sqlite3.Connection, name: str) -> bool:
    row = con.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def _geometry_column(con: sqlite3.Connection, layer: str) -> str:
    row = con.execute(
        "SELECT column_name FROM gpkg_geometry_columns WHERE lower(table_name) = lower(?)",
        (layer,),
    ).fetchone()
    if row is None:
        raise ValueError(f"layer {layer!r} is not a feature table of this GeoPackage")
    return row[0]


def _ensure_layer_styles(con: sqlite3.Connection) -> None:
    """Create ``layer_styles`` and register it the way GDAL does, unless it already exists."""
    if _table_exists(con, "layer_styles"):
        return
    con.execute(_CREATE_LAYER_STYLES)
    con.execute(
        "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
        "VALUES ('layer_styles', 'attributes', 'layer_styles', '', 0)"
    )
    if _table_exists(con, "gpkg_ogr_contents"):
        # NULL tells GDAL to count the rows itself instead of trusting a cached count.
        con.execute(
            "INSERT OR REPLACE INTO gpkg_ogr_contents (table_name, feature_count) "
            "VALUES ('layer_styles', NULL)"
        )


def write_qgis_style(
    gpkg_path: str,
    layer: str,
    n_classes: int,
    field: str = "pseudo_class",
    class_names: list[str] | None = None,
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> None:
    """Store a categorized style for ``layer`` as its default style in the GeoPackage.

    One category per class id ``0..n_classes-1`` (``colours``, default
    :func:`output_class_colours`; semi-transparent fill, darker outline). A previous geoalps style of the same layer is
    replaced, other styles are kept but no longer the default. Cost: one small SQLite
    transaction; the feature table is not read.
    """
    if class_names is None:
        class_names = [f"class {i}" for i in range(n_classes)]
    if len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names given for {n_classes} classes")
    colors = [tuple(c[:3]) for c in colours] if colours is not None else output_class_colours(n_classes)
    if len(colors) != n_classes:
        raise ValueError(f"{len(colors)} colours given for {n_classes} classes")
    qml = categorized_qml(field, colors, class_names)
    sld = categorized_sld(layer, field, colors, class_names)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    con = sqlite3.connect(gpkg_path)
    try:
        with con:
            geometry_column = _geometry_column(con, layer)
            _ensure_layer_styles(con)
            con.execute(
                "DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?",
                (layer, STYLE_NAME),
            )
            con.execute(
                "UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,)
            )
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL, ?)",
                (
                    layer, geometry_column, STYLE_NAME, qml, sld,
                    f"geoalps: {n_classes} pseudo-classes on {field}", now,
                ),
            )
    finally:
        con.close()


def paletted_raster_qml(colors: list[tuple[int, int, int]], class_names: list[str]) -> str:
    """A QGIS 3.22 QML document: a paletted renderer on band 1, one entry per class id.

    Listing only the K classes matters: a uint8 GeoTIFF's colour table always has 256 entries,
    so a palette built from it shows 256 legend rows, most of them black.
    """
    root = ET.Element("qgis", version="3.22.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
        nodataColor="",
    )
    palette = ET.SubElement(renderer, "colorPalette")
    for class_id, (rgb, name) in enumerate(zip(colors, class_names)):
        ET.SubElement(
            palette, "paletteEntry", value=str(class_id), color=_hex(rgb), alpha="255", label=name
        )
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def raster_style_path(raster_path: str | os.PathLike) -> str:
    """Where QGIS looks for a raster's default style: the same name with ``.qml``."""
    return os.path.splitext(os.fspath(raster_path))[0] + ".qml"


def write_qgis_raster_style(
    raster_path: str | os.PathLike, n_classes: int, class_names: list[str] | None = None,
    colours: list[tuple[int, int, int]] | None = None,
) -> str:
    """Write the class raster's default QGIS style (``labels.tif`` -> ``labels.qml``).

    Colours match :func:`output_class_colours` (and so the polygons' categories) unless
    ``colours`` are given. Call it once the raster is at its final path; the sidecar is written to a temp name
    and renamed, so it is complete or absent. Returns the sidecar's path.
    """
    from geoalps.errors import OptionError
    from geoalps.files import write_bytes_atomic

    if class_names is None:
        class_names = [f"class {i}" for i in range(n_classes)]
    if len(class_names) != n_classes:
        raise OptionError(f"{len(class_names)} class names given for {n_classes} classes")
    palette = [tuple(c[:3]) for c in colours[:n_classes]] if colours and len(colours) >= n_classes else output_class_colours(n_classes)
    target = raster_style_path(raster_path)
    write_bytes_atomic(target, paletted_raster_qml(palette, class_names).encode("utf-8"), fsync=False)
    return target
