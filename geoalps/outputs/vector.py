"""Object polygons: the one layer writer, reader and schema behind ``label``, ``predict`` and
``classes name``, in any of the formats of :mod:`geoalps.outputs.formats`.

Schema of layer ``masks`` (:data:`LAYER`): ``instance_id`` (1, 2, ... in file order), the class
field (``pseudo_class`` from ``label``, ``class_id`` from ``predict``), ``class_name`` where classes
have names, then per-command attributes; ``area`` is in CRS units squared. GeoPackage version 1.2
(QGIS 3.22 opens it without the "partially supported" warning), MultiPolygon geometries, written
in transactions of :data:`BATCH_ROWS` features so memory follows one batch, not the layer.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from geoalps.errors import InputError
from geoalps.files import atomic_path
from geoalps.outputs.formats import (GEOPACKAGE, GEOPARQUET, SHAPEFILE, OutputFormat, check_geopackage_replaceable,
                                     check_output, format_of, metadata_sidecar, style_sidecar)

#: Name of the polygon layer in every geoalps GeoPackage.
LAYER = "masks"
#: Features written per GeoPackage transaction.
BATCH_ROWS = 20_000
#: Layer metadata item of a labelling output: JSON {scene file name: absolute path}. (Layer, not
#: dataset, metadata: reading a GeoPackage's dataset metadata makes GDAL write an .aux.xml beside it.)
SCENES_METADATA = "geoalps_scenes"
#: Layer metadata item: JSON {scene file name: [role of each band, or null]}, the band roles the
#: run used (``--band-names``, else the file's descriptions or colour interpretation).
BAND_ROLES_METADATA = "geoalps_band_roles"
#: Layer metadata item of a labelling output: JSON {"engine", "model_type", "checkpoint",
#: "description"}, the engine the run resolved once (``--engine auto`` decided) and how it described
#: itself (model size read from the checkpoint, generator).
ENGINE_METADATA = "geoalps_engine"
#: Columns of one object as labelling produces it, before ids and areas are added.
OBJECT_COLUMNS = ("pseudo_class", "score", "area_px", "n_fragments", "class_distance", "scene")


class LayerWriter:
    """Appends batches of objects to one GeoPackage layer, one transaction per batch.

    With ``first_id`` set, every row gets ``instance_id`` (counting on from ``first_id``, so ids
    run 1..N over the file) as its first column and ``area`` after the class and score columns;
    without it rows are written as given (the per-scene layers inside a work folder).
    """

    def __init__(self, path: str | os.PathLike, crs_wkt: str | None, layer: str = LAYER,
                 first_id: int | None = None, empty=None, layer_metadata: dict[str, str] | None = None) -> None:
        self.path, self.crs_wkt, self.layer = Path(path), crs_wkt, layer
        self.layer_metadata = layer_metadata
        self.next_id = first_id
        self.rows = 0
        self._empty = empty
        self._pending: list = []
        self._pending_rows = 0

    def add(self, frame) -> None:
        if len(frame):
            if self.next_id is not None:
                frame = with_ids(frame, self.next_id)
                self.next_id += len(frame)
            self._pending.append(frame)
            self._pending_rows += len(frame)
        if self._pending_rows >= BATCH_ROWS:
            self.flush()

    def flush(self, force: bool = False) -> None:
        import geopandas as gpd
        import pandas as pd
        import pyogrio

        if not self._pending and not (force and self.rows == 0):
            return
        if self._pending:
            frame = gpd.GeoDataFrame(pd.concat(self._pending, ignore_index=True), geometry="geometry", crs=self.crs_wkt)
        else:
            frame = self._empty if self._empty is not None else empty_objects(self.crs_wkt)
            if self.next_id is not None:  # an empty output still has the full schema
                frame = with_ids(frame, self.next_id)
        creating = not self.path.exists()
        with warnings.catch_warnings():  # pixel-coordinate outputs have no CRS, as documented
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            pyogrio.write_dataframe(
                frame, self.path, layer=self.layer, driver="GPKG", append=self.rows > 0 or not creating,
                promote_to_multi=True, geometry_type="MultiPolygon",
                dataset_options={"VERSION": "1.2"} if creating else None,
                layer_metadata=self.layer_metadata if creating else None,
            )
        self.rows += len(frame)
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self.flush(force=True)


def with_ids(frame, first_id: int):
    """``frame`` with ``instance_id`` (from ``first_id``) in front and ``area`` (CRS units²) at
    column 4, as the output schema has them."""
    frame = frame.copy()
    frame.insert(0, "instance_id", np.arange(first_id, first_id + len(frame), dtype=np.int64))
    with warnings.catch_warnings():  # geographic CRSs: area in degrees squared, as documented
        warnings.simplefilter("ignore", UserWarning)
        frame.insert(min(4, len(frame.columns) - 1), "area", frame.geometry.area.round(6))
    return frame


def with_class_names(frame, class_ids, names):
    """``frame`` (with ``pseudo_class``) plus ``class_id`` (the named class each pseudo-class
    belongs to, from the lookup ``class_ids``) and ``class_name`` (``names[class_id]``), placed
    after ``scene``: the schema of a named output."""
    frame = frame.copy()
    lookup = np.asarray(class_ids, dtype=np.int32)
    ids = lookup[frame["pseudo_class"].to_numpy(dtype=np.int64)] if len(frame) else np.zeros(0, np.int32)
    at = list(frame.columns).index("scene") + 1 if "scene" in frame.columns else len(frame.columns) - 1
    frame.insert(at, "class_id", ids.astype(np.int32))
    frame.insert(at + 1, "class_name", np.asarray([names[i] for i in ids], dtype=object))
    return frame


def objects_frame(frames: list, crs_wkt: str | None):
    """Labelling's frames (in ``crs_wkt``) as one GeoDataFrame, as an output file holds them:
    ``instance_id`` 1..N, ``area``, MultiPolygons (the API's result without an output file)."""
    import geopandas as gpd
    import pandas as pd

    frames = [f for f in frames if len(f)] or [empty_objects(crs_wkt)]
    frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=crs_wkt)
    return with_ids(_schema_types(frame), 1)


def empty_objects(crs_wkt: str | None):
    """A zero-row frame with labelling's object columns (so an empty result still has the schema)."""
    import geopandas as gpd

    return gpd.GeoDataFrame(
        {"pseudo_class": np.zeros(0, np.int32), "score": np.zeros(0), "area_px": np.zeros(0, np.int64),
         "n_fragments": np.zeros(0, np.int32), "class_distance": np.zeros(0), "scene": np.zeros(0, dtype=object)},
        geometry=gpd.GeoSeries([], crs=crs_wkt), crs=crs_wkt,
    )


@dataclass(frozen=True)
class LayerStyle:
    """The categorized QGIS style of an output: one colour per class id of ``field``.

    ``first_pseudo_classes``: for named classes, the pseudo-class each class id is coloured as
    (:func:`geoalps.outputs.style.output_class_colours`); None: the ids are pseudo-classes."""

    n_classes: int
    field: str = "pseudo_class"
    class_names: list[str] | None = None
    first_pseudo_classes: tuple[int, ...] | None = None


def write_output(frames: Iterable, path: str | os.PathLike, crs_wkt: str | None, *, overwrite: bool = False,
                 style: LayerStyle | None = None, metadata: dict[str, str] | None = None, empty=None,
                 renumber: bool = True) -> int:
    """Write frames as one output layer, in the format of ``path``'s extension
    (:mod:`geoalps.outputs.formats`), with ``instance_id`` 1..N and ``area`` added; returns the
    number of rows.

    Streaming: GeoPackage appends one transaction per :data:`BATCH_ROWS` rows; the other GDAL
    formats take the frames as one Arrow stream (``pyogrio.write_arrow``), GeoParquet one row
    group per frame (``pyarrow.parquet.ParquetWriter``), so memory follows one frame. ``empty``:
    the zero-row frame that gives an empty output its schema (default: labelling's columns).
    ``renumber=False``: the frames already have ``instance_id`` and ``area`` (a copy of an output).
    Atomic: the file and all its sidecars (Shapefile's .shx/.dbf/.prj/.cpg, the .qml style, the
    .geoalps.json metadata) are written under temporary names and renamed at the end, or none.
    """
    fmt = check_output(path, overwrite)
    with _atomic_output(path, fmt, overwrite) as tmp:
        if fmt is GEOPACKAGE:
            writer = LayerWriter(tmp, crs_wkt, first_id=1 if renumber else None, empty=empty, layer_metadata=metadata)
            for frame in frames:
                writer.add(frame)
            writer.close()
            rows = writer.rows
        else:
            rows = _write_stream(_numbered(frames, crs_wkt, empty, renumber), tmp, fmt, crs_wkt, Path(path).stem,
                                 metadata if fmt.holds_metadata else None)
        if style is not None:
            _write_style(tmp, fmt, style)
        if metadata and not fmt.holds_metadata:
            metadata_sidecar(tmp).write_text(json.dumps(metadata, indent=1))
        if fmt is GEOPACKAGE and overwrite:  # opened in QGIS while we wrote? (see check_output)
            check_geopackage_replaceable(path)
    return rows


def write_layer(frames: Iterable, path: str | os.PathLike, crs_wkt: str | None, *, overwrite: bool = False,
                n_classes: int | None = None, class_field: str = "pseudo_class",
                class_names: list[str] | None = None, empty=None) -> Path:
    """Write frames as the output layer with ids and areas, plus the categorized QGIS style on
    ``class_field`` when ``n_classes`` is given (see :func:`write_output`)."""
    style = LayerStyle(n_classes, class_field, class_names) if n_classes else None
    write_output(frames, path, crs_wkt, overwrite=overwrite, style=style, empty=empty)
    return Path(path)


@contextlib.contextmanager
def _atomic_output(path: str | os.PathLike, fmt: OutputFormat, overwrite: bool) -> Iterator[Path]:
    """:func:`geoalps.files.atomic_path` for a file and its sidecars: sidecars are renamed just
    before the main file (a stale sidecar of a replaced output is removed), leftovers deleted."""
    with atomic_path(path, overwrite) as tmp:
        try:
            yield tmp
            for temporary, final in zip(fmt.sidecars(tmp), fmt.sidecars(path)):
                if temporary.exists():
                    os.replace(temporary, final)
                elif final.exists():
                    final.unlink()
        finally:
            for temporary in fmt.sidecars(tmp):
                if temporary.exists():
                    temporary.unlink()


def _write_style(path: Path, fmt: OutputFormat, style: LayerStyle) -> None:
    from geoalps.outputs.style import categorized_qml, output_class_colours, write_qgis_style

    colours = output_class_colours(style.n_classes, style.first_pseudo_classes)
    if fmt.holds_style:
        write_qgis_style(str(path), LAYER, style.n_classes, field=style.field, class_names=style.class_names,
                         colours=colours)
        return
    names = style.class_names or [f"class {i}" for i in range(style.n_classes)]
    qml = categorized_qml(fmt.stored(style.field), colours, names)
    style_sidecar(path).write_text(qml, encoding="utf-8")


def _numbered(frames: Iterable, crs_wkt: str | None, empty, renumber: bool = True) -> Iterator:
    """Frames with ``instance_id``/``area`` (ids on from 1, unless ``renumber`` is False); a
    zero-row frame with the schema when there are no rows."""
    rows = 0
    last = None
    for frame in frames:
        last = frame
        if len(frame):
            yield with_ids(frame, rows + 1) if renumber else frame
            rows += len(frame)
    if rows == 0:
        if not renumber and last is not None:
            yield last
        else:
            yield with_ids(empty if empty is not None else empty_objects(crs_wkt), 1)


def _as_multi(geometries: np.ndarray) -> np.ndarray:
    """Polygons as one-part MultiPolygons (the layer's geometry type), others unchanged."""
    import shapely

    geometries = np.asarray(geometries, dtype=object)
    single = shapely.get_type_id(geometries) == shapely.GeometryType.POLYGON
    if single.any():
        geometries = geometries.copy()
        geometries[single] = shapely.multipolygons(geometries[single], indices=np.arange(int(single.sum())))
    return geometries


def _arrow_table(frame, fmt: OutputFormat, schema=None):
    """One frame as an Arrow table: attributes under the format's field names, WKB geometry."""
    import pyarrow as pa
    import shapely

    arrays, names = [], []
    for column in frame.columns:
        if column == frame.geometry.name:
            continue
        values = frame[column]
        kind = pa.string() if values.dtype == object else None
        arrays.append(pa.array(values.to_numpy(), type=kind, from_pandas=True))
        names.append(fmt.stored(column))
    arrays.append(pa.array(shapely.to_wkb(_as_multi(frame.geometry.values)), type=pa.binary()))
    names.append("geometry")
    table = pa.Table.from_arrays(arrays, names=names)
    return table if schema is None else table.cast(schema)


def _write_stream(frames: Iterator, path: Path, fmt: OutputFormat, crs_wkt: str | None, layer_name: str,
                  metadata: dict[str, str] | None) -> int:
    """The numbered frames into a non-GeoPackage file, one frame in memory at a time."""
    import pyarrow as pa

    first = _arrow_table(next(frames), fmt)
    schema = first.schema
    rows = [0]
    failure: list[BaseException] = []

    def batches():
        try:
            for table in (first, *(_arrow_table(f, fmt, schema) for f in frames)):
                rows[0] += table.num_rows
                yield from table.to_batches()
        except BaseException as exc:  # GDAL would report it as "error while accessing batch"
            failure.append(exc)
            raise

    if fmt is GEOPARQUET:
        import pyarrow.parquet as pq

        writer = pq.ParquetWriter(path, schema.with_metadata(_geoparquet_metadata(crs_wkt, metadata)))
        with writer:
            for batch in batches():
                writer.write_batch(batch)
        return rows[0]
    import pyogrio

    options = {"layer": layer_name} if fmt is not SHAPEFILE else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # names are fitted already; GDAL's notes
            pyogrio.write_arrow(pa.RecordBatchReader.from_batches(schema, batches()), path, driver=fmt.driver,
                                geometry_name="geometry", geometry_type="MultiPolygon", crs=crs_wkt,
                                layer_metadata=metadata, **options)
    except Exception:
        if failure:  # the frames' own error, not GDAL's wrapper of it
            raise failure[0] from None
        raise
    return rows[0]


def _geoparquet_metadata(crs_wkt: str | None, metadata: dict[str, str] | None) -> dict[bytes, bytes]:
    """GeoParquet 1.0 ``geo`` metadata (WKB MultiPolygons, PROJJSON CRS) plus geoalps's items."""
    column: dict = {"encoding": "WKB", "geometry_types": ["MultiPolygon"]}
    if crs_wkt is not None:
        from pyproj import CRS

        column["crs"] = CRS.from_user_input(crs_wkt).to_json_dict()
    else:
        column["crs"] = None  # GeoParquet: null = unknown CRS (absent would mean OGC:CRS84)
    geo = {"version": "1.0.0", "primary_column": "geometry", "columns": {"geometry": column}}
    items = {b"geo": json.dumps(geo).encode()}
    items.update({k.encode(): v.encode() for k, v in (metadata or {}).items()})
    return items


# ---------------------------------------------------------------------------------------------
# Reading: every format, under the schema's long field names


def _format(path: str | os.PathLike) -> OutputFormat:
    """The format an output is read as: by extension, GeoPackage's rules for anything else."""
    return format_of(path) or GEOPACKAGE


def _check_readable(path: str | os.PathLike) -> None:
    if not Path(path).is_file():
        raise InputError(f"{path}: file not found")


def layer_info(path: str | os.PathLike, layer: str | None = None, force_total_bounds: bool = False) -> dict:
    """``fields`` (long names), ``crs`` (WKT or None), ``features``, ``layer_metadata`` (the
    format's own or the sidecar's) and, with ``force_total_bounds``, ``total_bounds`` of an
    output layer, whatever its format. Raises InputError when the file cannot be read."""
    _check_readable(path)
    fmt = _format(path)
    try:
        if fmt is GEOPARQUET:
            info = _parquet_info(path, force_total_bounds)
        else:
            import pyogrio

            info = dict(pyogrio.read_info(path, layer=layer or fmt.layer, force_total_bounds=force_total_bounds))
            info["fields"] = [fmt.canonical(str(f)) for f in info["fields"]]
            info["layer_metadata"] = dict(info.get("layer_metadata") or {})
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyogrio/pyarrow raise several unrelated types
        where = f" layer {layer or fmt.layer!r}" if (layer or fmt.layer) else ""
        raise InputError(f"{path}: cannot read{where} as {fmt.name} ({' '.join(str(exc).split())})") from None
    if not fmt.holds_metadata and metadata_sidecar(path).is_file():
        try:
            info["layer_metadata"].update(json.loads(metadata_sidecar(path).read_text()))
        except ValueError:
            pass
    return info


def layer_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The layer metadata items of an output (``geoalps_scenes``, ...), {} when it has none."""
    return layer_info(path).get("layer_metadata") or {}


def read_layer(path: str | os.PathLike, layer: str | None = None, *, columns: list[str] | None = None,
               bbox: tuple[float, float, float, float] | None = None, fids=None, read_geometry: bool = True,
               fid_as_index: bool = False, skip_features: int = 0, max_features: int | None = None):
    """An output layer (or the rows asked for) as a GeoDataFrame with the schema's long field
    names and MultiPolygon geometries, whatever the format. ``fids`` and the index with
    ``fid_as_index`` are the format's feature ids (GeoPackage from 1, others from 0): use ids
    read from the same file. Cost: GeoPackage and FlatGeobuf answer ``bbox`` from their spatial
    index; GeoParquet, GeoJSON and Shapefile scan the layer (GeoParquet one row group at a time)."""
    fmt = _format(path)
    if fmt is GEOPARQUET:
        frame = _parquet_read(path, columns, bbox, fids, read_geometry, fid_as_index, skip_features, max_features)
    else:
        import pyogrio

        stored = [fmt.stored(c) for c in columns] if columns is not None else None
        frame = pyogrio.read_dataframe(path, layer=layer or fmt.layer, columns=stored, bbox=bbox, fids=fids,
                                       read_geometry=read_geometry, fid_as_index=fid_as_index,
                                       skip_features=skip_features, max_features=max_features)
        if fmt.field_names:
            frame = frame.rename(columns={c: fmt.canonical(c) for c in frame.columns})
    return _schema_types(frame)


def _schema_types(frame):
    """Ids and pixel areas back as int64 (GeoJSON reads small integers as int32), polygons as
    MultiPolygons (Shapefile has no multi type)."""
    for column in ("instance_id", "area_px"):
        if column in frame.columns and frame[column].dtype.kind == "i":
            frame[column] = frame[column].astype(np.int64)
    if "geometry" in frame.columns and len(frame):
        present = frame.geometry.notna().to_numpy()
        geometries = frame.geometry.to_numpy().copy()
        geometries[present] = _as_multi(geometries[present])
        frame = frame.set_geometry(type(frame.geometry)(geometries, index=frame.index, crs=frame.crs))
    return frame


def read_layer_batches(path: str | os.PathLike, layer: str | None = None, batch_rows: int = BATCH_ROWS) -> Iterator:
    """An output layer as GeoDataFrames of at most ``batch_rows`` rows, in file order (one empty
    frame for an empty layer)."""
    fmt = _format(path)
    if fmt is GEOPARQUET:
        import pyarrow.parquet as pq

        crs = _parquet_crs(pq.ParquetFile(path))
        yielded = False
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yielded = True
            yield _schema_types(_parquet_frame(batch, crs))
        if not yielded:
            yield read_layer(path)
        return
    total = layer_info(path, layer)["features"]
    for start in range(0, total, batch_rows):
        yield read_layer(path, layer, skip_features=start, max_features=batch_rows)
    if total == 0:
        yield read_layer(path, layer)


def objects_in_layer(path: str | os.PathLike, layer: str | None = None, field: str = "pseudo_class"):
    """A block query over an output layer (GeoPackage/FlatGeobuf: through its spatial index),
    so memory follows the block."""
    def query(bounds):
        frame = read_layer(path, layer, bbox=tuple(bounds), columns=[field])
        return frame.geometry.values, frame[field].to_numpy()

    return query


def _parquet_crs(parquet) -> str | None:
    geo = json.loads((parquet.schema_arrow.metadata or {}).get(b"geo", b"{}"))
    column = geo.get("columns", {}).get(geo.get("primary_column", "geometry"), {})
    if "crs" not in column:
        return "OGC:CRS84" if geo else None
    if column["crs"] is None:
        return None
    from pyproj import CRS

    return CRS.from_json_dict(column["crs"]).to_wkt()


def _parquet_info(path, force_total_bounds: bool) -> dict:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    metadata = {k.decode(): v.decode() for k, v in (parquet.schema_arrow.metadata or {}).items()
                if k not in (b"geo", b"pandas", b"ARROW:schema")}
    info = {"fields": [n for n in parquet.schema_arrow.names if n != "geometry"], "crs": _parquet_crs(parquet),
            "features": parquet.metadata.num_rows, "layer_metadata": metadata, "geometry_type": "MultiPolygon"}
    if force_total_bounds:
        import shapely

        bounds = np.array([np.inf, np.inf, -np.inf, -np.inf])
        for batch in parquet.iter_batches(columns=["geometry"]):
            b = shapely.total_bounds(shapely.from_wkb(batch.column(0).to_numpy(zero_copy_only=False)))
            if np.isfinite(b).all():
                bounds = np.r_[np.minimum(bounds[:2], b[:2]), np.maximum(bounds[2:], b[2:])]
        info["total_bounds"] = tuple(bounds) if np.isfinite(bounds).all() else (np.nan,) * 4
    return info


def _parquet_frame(table, crs, index=None):
    import geopandas as gpd
    import shapely

    frame = table.to_pandas()
    if index is not None:
        frame.index = index
    if "geometry" in frame.columns:
        geometries = shapely.from_wkb(frame.pop("geometry").to_numpy())
        return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geometries, index=frame.index, crs=crs), crs=crs)
    return frame


def _parquet_read(path, columns, bbox, fids, read_geometry, fid_as_index, skip, limit):
    """Rows of a GeoParquet layer, streamed one row group at a time: by position (``skip``,
    ``limit``), ``fids`` (row numbers from 0, in the order given) or ``bbox`` (intersecting)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    _check_readable(path)
    parquet = pq.ParquetFile(path)
    crs = _parquet_crs(parquet)
    wanted = [c for c in parquet.schema_arrow.names if c != "geometry"] if columns is None else list(columns)
    needs_geometry = read_geometry or bbox is not None
    read_columns = wanted + (["geometry"] if needs_geometry else [])
    picked_tables, picked_index = [], []
    wanted_fids = None if fids is None else np.asarray(fids, dtype=np.int64)
    start, end = skip, (skip + limit if limit is not None else None)
    offset = 0
    box = shapely.box(*bbox) if bbox is not None else None
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=read_columns):
        positions = np.arange(offset, offset + batch.num_rows)
        offset += batch.num_rows
        keep = (positions >= start) & (positions < end if end is not None else True)
        if wanted_fids is not None:
            keep &= np.isin(positions, wanted_fids)
        if box is not None and keep.any():
            geometries = shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False))
            keep &= shapely.intersects(geometries, box)
        if keep.any():
            picked_tables.append(pa.Table.from_batches([batch]).filter(pa.array(keep)))
            picked_index.append(positions[keep])
        if end is not None and offset >= end:
            break
    schema = parquet.schema_arrow.remove_metadata()
    schema = pa.schema([schema.field(c) for c in read_columns])
    table = pa.concat_tables(picked_tables) if picked_tables else schema.empty_table()
    index = np.concatenate(picked_index) if picked_index else np.zeros(0, np.int64)
    if needs_geometry and not read_geometry:
        table = table.drop_columns(["geometry"])
    frame = _parquet_frame(table, crs, pd.Index(index, name="fid"))
    if wanted_fids is not None:
        frame = frame.loc[[f for f in wanted_fids if f in frame.index]]
    if not fid_as_index:
        frame = frame.reset_index(drop=True)
    if read_geometry and "geometry" not in frame.columns:
        import geopandas as gpd

        frame = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    return frame
