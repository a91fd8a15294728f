"""Output formats, chosen by the output's extension; one schema for all of them.

================  =====================  =======================================================
extension         format                 where the QGIS style / the scenes record live
================  =====================  =======================================================
``.gpkg``         GeoPackage (default)   ``layer_styles`` table / layer metadata (layer ``masks``)
``.parquet``      GeoParquet 1.0 (WKB)   ``<stem>.qml`` / Parquet key-value metadata
``.fgb``          FlatGeobuf             ``<stem>.qml`` / FlatGeobuf layer metadata
``.geojson``      GeoJSON                ``<stem>.qml`` / ``<file>.geoalps.json`` sidecar
``.json``
``.shp``          ESRI Shapefile         ``<stem>.qml`` / ``<file>.geoalps.json`` sidecar
================  =====================  =======================================================

Single-layer formats hold one layer, named after the file (GDAL's rule); GeoPackage keeps its
``masks`` layer. Shapefile field names are limited to 10 characters: the long names of the
schema are stored under the fixed short names of :data:`SHAPEFILE_FIELDS` (always the same, so
files of several runs match) and read back under the long names by
:func:`geoalps.outputs.vector.read_layer`. QGIS loads ``<stem>.qml`` as the default style of a
file-based layer, which is why that sidecar has no other name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from geoalps.errors import OutputError

#: Long schema names -> the 10-character names a Shapefile stores (others are short already).
SHAPEFILE_FIELDS: Mapping[str, str] = MappingProxyType({
    "instance_id": "instanceid",
    "pseudo_class": "pseudo_cls",
    "n_fragments": "fragments",
    "class_distance": "class_dist",
})
#: Suffix of the metadata sidecar of formats that cannot hold layer metadata.
METADATA_SIDECAR = ".geoalps.json"


@dataclass(frozen=True)
class OutputFormat:
    """What geoalps needs to know about one vector format."""

    name: str
    #: GDAL driver name (written through pyogrio), or "Parquet" (written by pyarrow).
    driver: str
    extensions: tuple[str, ...]
    #: The layer to read/write; None: the file's one layer.
    layer: str | None = None
    #: Style kept inside the file (GeoPackage ``layer_styles``); else a ``.qml`` sidecar.
    holds_style: bool = False
    #: Layer metadata kept inside the file; else a ``.geoalps.json`` sidecar.
    holds_metadata: bool = False
    #: Files GDAL writes beside the main one (same stem, these suffixes).
    companions: tuple[str, ...] = ()
    #: Long field name -> stored field name, where the format limits names.
    field_names: Mapping[str, str] = field(default_factory=dict)

    def stored(self, name: str) -> str:
        return self.field_names.get(name, name)

    def canonical(self, name: str) -> str:
        for long, short in self.field_names.items():
            if short == name:
                return long
        return name

    def sidecars(self, path: str | os.PathLike) -> list[Path]:
        """Every file written with ``path`` besides itself: companions, style, metadata."""
        path = Path(path)
        out = [path.with_suffix(s) for s in self.companions]
        if not self.holds_style:
            out.append(style_sidecar(path))
        if not self.holds_metadata:
            out.append(metadata_sidecar(path))
        return out


GEOPACKAGE = OutputFormat("GeoPackage", "GPKG", (".gpkg",), layer="masks", holds_style=True, holds_metadata=True)
GEOPARQUET = OutputFormat("GeoParquet", "Parquet", (".parquet", ".geoparquet"), holds_metadata=True)
FLATGEOBUF = OutputFormat("FlatGeobuf", "FlatGeobuf", (".fgb",), holds_metadata=True)
GEOJSON = OutputFormat("GeoJSON", "GeoJSON", (".geojson", ".json"))
SHAPEFILE = OutputFormat("Shapefile", "ESRI Shapefile", (".shp",), companions=(".shx", ".dbf", ".prj", ".cpg"),
                         field_names=SHAPEFILE_FIELDS)
FORMATS: tuple[OutputFormat, ...] = (GEOPACKAGE, GEOPARQUET, FLATGEOBUF, GEOJSON, SHAPEFILE)


def known_extensions() -> list[str]:
    return [e for f in FORMATS for e in f.extensions]


def format_of(path: str | os.PathLike) -> OutputFormat | None:
    """The format of ``path`` by its extension (case-insensitive), or None."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS if suffix in f.extensions), None)


def output_format(path: str | os.PathLike) -> OutputFormat:
    """The format of an output path; an unknown extension is an :class:`OutputError`."""
    fmt = format_of(path)
    if fmt is None:
        suffix = Path(path).suffix or "no extension"
        raise OutputError(f"{path}: unknown output format ({suffix}); use one of {', '.join(known_extensions())}")
    return fmt


def style_sidecar(path: str | os.PathLike) -> Path:
    """``out.fgb`` -> ``out.qml``, the default style QGIS loads with the layer."""
    return Path(path).with_suffix(".qml")


def metadata_sidecar(path: str | os.PathLike) -> Path:
    """``out.geojson`` -> ``out.geojson.geoalps.json``."""
    return Path(f"{path}{METADATA_SIDECAR}")


def check_output(path: str | os.PathLike, overwrite: bool, *, others: tuple = ()) -> OutputFormat:
    """Before any work: a known format, a writable place, and no existing file among the output
    and its sidecars (unless ``overwrite``); ``others`` are the run's other outputs, whose files
    must not be the same as this one's (a label raster ``out.tif`` also gets ``out.qml``)."""
    from geoalps.files import check_writable

    fmt = output_format(path)
    check_writable(path, overwrite)
    for sidecar in fmt.sidecars(path):
        check_writable(sidecar, overwrite)
    for other in others:
        if other is not None and style_sidecar(other) in fmt.sidecars(path):
            raise OutputError(f"{path}: its QGIS style {style_sidecar(path)} would be the label raster's style "
                              f"too ({other}); give the two outputs different names")
    return fmt
