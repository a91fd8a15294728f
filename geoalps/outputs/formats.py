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

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from geoalps.errors import BusyError, OutputError

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


#: Suffixes read as vector data (pyogrio) wherever a path may hold a raster or polygons
#: (``evaluate``'s truth and objects, training labels, the QGIS plugin's inputs): the output
#: formats' extensions and the GDAL vector formats geoalps only reads. Anything else is a raster.
VECTOR_SUFFIXES: tuple[str, ...] = (*(e for f in FORMATS for e in f.extensions), ".gml", ".kml", ".sqlite")


def known_extensions() -> list[str]:
    return [e for f in FORMATS for e in f.extensions]


def is_vector_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read as vector data, by its suffix (case-insensitive): see
    :data:`VECTOR_SUFFIXES`."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


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


#: Extensions of label rasters (always GeoTIFF, whatever the name says, so no other is taken).
RASTER_EXTENSIONS = (".tif", ".tiff")
#: Layers of a GeoPackage that geoalps writes and ``--overwrite`` may replace; GDAL's
#: ``layer_styles`` table holds their QGIS style. Anything else in the file is the user's.
OWN_GEOPACKAGE_TABLES = ("masks", "layer_styles")


def check_raster_output(path: str | os.PathLike) -> Path:
    """A label raster's name must end in .tif/.tiff: the bytes are GeoTIFF, and a ``.png`` or a
    ``.gpkg`` holding GeoTIFF bytes would mislead every program that opens it."""
    suffix = Path(path).suffix.lower()
    if suffix not in RASTER_EXTENSIONS:
        raise OutputError(f"{path}: unknown raster output format ({suffix or 'no extension'}); label rasters are "
                          f"GeoTIFF: use {' or '.join(RASTER_EXTENSIONS)}")
    return Path(path)


def raster_output_files(path: str | os.PathLike) -> list[Path]:
    """A label raster and its ``.qml`` style sidecar."""
    return [Path(path), style_sidecar(path)]


def output_files(path: str | os.PathLike) -> list[Path]:
    """A vector output and every sidecar written with it (for :func:`geoalps.files.check_distinct`)."""
    return [Path(path), *output_format(path).sidecars(path)]


def check_geopackage_replaceable(path: str | os.PathLike) -> None:
    """Before replacing an existing GeoPackage with ``--overwrite``: refuse when another program
    has it open with changes in a write-ahead log (a renamed new file would be paired with the old
    ``-wal``/``-shm`` and read back corrupt), or when it holds layers that are not geoalps's (the
    user's ``roads`` would be deleted with it). Costs one SQLite open of the existing file.

    Side files left by a program that crashed are folded back by SQLite here (a checkpoint, a hot
    journal rolled back); if they remain, the file is in use.
    """
    import sqlite3

    path = Path(path)
    if not path.is_file():
        return
    sides = [Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal")]
    if any(p.exists() for p in sides):
        with contextlib.suppress(sqlite3.Error, OSError):
            connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=0.5)
            try:
                connection.execute("PRAGMA schema_version").fetchone()  # rolls a hot journal back
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                connection.close()  # the last connection removes -wal and -shm
        left = [p.name for p in sides if p.exists()]
        if left:
            raise BusyError(f"{path}: open in another program (QGIS?) with unsaved changes or a transaction "
                            f"({', '.join(left)} beside it); close it there and rerun")
    others = _foreign_tables(path)
    if others:
        raise OutputError(f"{path}: holds other layers besides geoalps's (" + ", ".join(others[:5])
                          + (", ..." if len(others) > 5 else "") + "); --overwrite would delete them: "
                          "write to another file, or remove them first")


def _foreign_tables(path: Path) -> list[str]:
    """Tables of a GeoPackage (``gpkg_contents``) that are not geoalps's; [] if it is not one."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        try:
            rows = connection.execute("SELECT table_name FROM gpkg_contents").fetchall()
        finally:
            connection.close()
    except sqlite3.Error:  # not a GeoPackage (or damaged): nothing of the user's to keep in it
        return []
    return sorted(str(r[0]) for r in rows if str(r[0]).lower() not in OWN_GEOPACKAGE_TABLES)


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
    if fmt is GEOPACKAGE and overwrite:
        check_geopackage_replaceable(path)
    for sidecar in fmt.sidecars(path):
        check_writable(sidecar, overwrite)
    for other in others:
        if other is not None and style_sidecar(other) in fmt.sidecars(path):
            raise OutputError(f"{path}: its QGIS style {style_sidecar(path)} would be the label raster's style "
                              f"too ({other}); give the two outputs different names")
    return fmt
