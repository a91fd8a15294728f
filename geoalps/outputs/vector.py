"""Object polygons in a GeoPackage: the one layer writer and schema behind ``label`` and ``predict``.

Schema of layer ``masks`` (:data:`LAYER`): ``instance_id`` (1, 2, ... in file order), the class
field (``pseudo_class`` from ``label``, ``class_id`` from ``predict``), ``class_name`` where classes
have names, then per-command attributes; ``area`` is in CRS units squared. GeoPackage version 1.2
(QGIS 3.22 opens it without the "partially supported" warning), MultiPolygon geometries, written
in transactions of :data:`BATCH_ROWS` features so memory follows one batch, not the layer.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from geoalps.files import atomic_path

#: Name of the polygon layer in every geoalps GeoPackage.
LAYER = "masks"
#: Features written per GeoPackage transaction.
BATCH_ROWS = 20_000
#: Layer metadata item of a labelling output: JSON {scene file name: absolute path}. (Layer, not
#: dataset, metadata: reading a GeoPackage's dataset metadata makes GDAL write an .aux.xml beside it.)
SCENES_METADATA = "geoalps_scenes"
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
        creating = not self.path.exists()
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


def empty_objects(crs_wkt: str | None):
    """A zero-row frame with labelling's object columns (so an empty result still has the schema)."""
    import geopandas as gpd

    return gpd.GeoDataFrame(
        {"pseudo_class": np.zeros(0, np.int32), "score": np.zeros(0), "area_px": np.zeros(0, np.int64),
         "n_fragments": np.zeros(0, np.int32), "class_distance": np.zeros(0), "scene": np.zeros(0, dtype=object)},
        geometry=gpd.GeoSeries([], crs=crs_wkt), crs=crs_wkt,
    )


def write_layer(frames: Iterable, path: str | os.PathLike, crs_wkt: str | None, *, overwrite: bool = False,
                n_classes: int | None = None, class_field: str = "pseudo_class",
                class_names: list[str] | None = None, empty=None) -> Path:
    """Write frames as the ``masks`` layer with ids and areas, plus the categorized QGIS style on
    ``class_field`` when ``n_classes`` is given; ``empty`` is the zero-row frame written when
    there are no rows (default: labelling's columns). Atomic: complete or absent."""
    from geoalps.outputs.style import write_qgis_style

    with atomic_path(path, overwrite) as tmp:
        writer = LayerWriter(tmp, crs_wkt, first_id=1, empty=empty)
        for frame in frames:
            writer.add(frame)
        writer.close()
        if n_classes:
            write_qgis_style(str(tmp), LAYER, n_classes, field=class_field, class_names=class_names)
    return Path(path)


def read_layer_batches(path: str | os.PathLike, layer: str = LAYER, batch_rows: int = BATCH_ROWS) -> Iterator:
    """A GeoPackage layer as GeoDataFrames of at most ``batch_rows`` rows, in file order."""
    import pyogrio

    total = pyogrio.read_info(path, layer=layer)["features"]
    for start in range(0, total, batch_rows):
        yield pyogrio.read_dataframe(path, layer=layer, skip_features=start, max_features=batch_rows)
    if total == 0:
        yield pyogrio.read_dataframe(path, layer=layer)


def read_layer(path: str | os.PathLike, layer: str = LAYER):
    import pyogrio

    return pyogrio.read_dataframe(path, layer=layer)


def objects_in_layer(path: str | os.PathLike, layer: str = LAYER, field: str = "pseudo_class"):
    """A block query over a GeoPackage layer, through its spatial index: memory follows the block."""
    import pyogrio

    def query(bounds):
        frame = pyogrio.read_dataframe(path, layer=layer, bbox=tuple(bounds), columns=[field])
        return frame.geometry.values, frame[field].to_numpy()

    return query
