"""Pass 2 of a run: classify every object from its stored features, merge seam fragments, and
stream the result into per-scene GeoPackage layers.

Tiles are read back from the work store one at a time. Which objects merge across seams is known
before (:class:`geoalps.objects.seams.SeamIndex`, filled in pass 1): every other object is classified and
written straight away, and only the fragments of merged objects are held until the scene is done.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.inputs.scene import Scene
from geoalps.labelling.tile_work import TileResult
from geoalps.inputs.tiles import Tile
from geoalps.objects.seams import merge_group

#: Features written per GeoPackage transaction.
BATCH_ROWS = 20_000
COLUMNS = ("pseudo_class", "score", "area_px", "n_fragments", "class_distance", "scene")


class LayerWriter:
    """Appends batches of objects to one GeoPackage layer, one transaction per batch."""

    def __init__(self, path: Path, crs_wkt: str | None, layer: str = "masks") -> None:
        self.path, self.crs_wkt, self.layer = Path(path), crs_wkt, layer
        self.rows = 0
        self._pending: list = []
        self._pending_rows = 0

    def add(self, frame) -> None:
        if len(frame):
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
            frame = empty_frame(self.crs_wkt)
        pyogrio.write_dataframe(
            frame, self.path, layer=self.layer, driver="GPKG", append=self.rows > 0 or self.path.exists(),
            promote_to_multi=True, geometry_type="MultiPolygon",
            dataset_options=None if self.path.exists() else {"VERSION": "1.2"},
        )
        self.rows += len(frame)
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self.flush(force=True)


def empty_frame(crs_wkt: str | None):
    import geopandas as gpd

    return gpd.GeoDataFrame(
        {"pseudo_class": np.zeros(0, np.int32), "score": np.zeros(0), "area_px": np.zeros(0, np.int64),
         "n_fragments": np.zeros(0, np.int32), "class_distance": np.zeros(0), "scene": np.zeros(0, dtype=object)},
        geometry=gpd.GeoSeries([], crs=crs_wkt), crs=crs_wkt,
    )


def _frame(scene: Scene, geometries, features, scores, fragments, clusterer: OnlineKMeans | None):
    import geopandas as gpd
    import shapely

    classes = clusterer.predict(features) if clusterer is not None else np.zeros(len(geometries), np.int32)
    distance = clusterer.distances(features) if clusterer is not None else np.zeros(len(geometries))
    pixel_area = abs(scene.transform.determinant) or 1.0
    return gpd.GeoDataFrame(
        {
            "pseudo_class": classes.astype(np.int32),
            "score": np.round(np.asarray(scores, dtype=np.float64), 6),
            "area_px": np.rint(shapely.area(geometries) / pixel_area).astype(np.int64),
            "n_fragments": np.asarray(fragments, dtype=np.int32),
            "class_distance": np.round(np.asarray(distance, dtype=np.float64), 6),
            "scene": np.full(len(geometries), scene.name, dtype=object),
        },
        geometry=gpd.GeoSeries(list(geometries), crs=scene.crs_wkt),
        crs=scene.crs_wkt,
    )


def assemble_scene(
    scene: Scene,
    tiles: Sequence[Tile],
    load: "callable[[Tile], TileResult]",
    blocks: Sequence[str],
    clusterer: OnlineKMeans | None,
    writer: LayerWriter,
    merged: Sequence[Sequence[tuple[int, int]]] = (),
    on_tile=None,
) -> int:
    """Classify, merge and write one scene's objects; returns the number written.

    ``merged`` lists the objects that are one object across a seam, as groups of (tile number,
    object index) (:meth:`geoalps.objects.seams.SeamIndex.merged`); every other object is written as its
    tile is read. A merged object's features, score and class come from its fragments weighted
    by pixel area.
    """
    group_of: dict[int, dict[int, int]] = {}
    for group_number, group in enumerate(merged):
        for tile_number, index in group:
            group_of.setdefault(tile_number, {})[index] = group_number
    fragments: dict[tuple[int, int], tuple] = {}  # only fragments of merged objects are held
    written = 0
    for tile_number, tile in enumerate(tiles):
        result = load(tile)
        if on_tile is not None:
            on_tile()
        if not len(result):
            continue
        feats = result.feature_matrix(blocks)
        alone = np.ones(len(result), dtype=bool)
        for index in group_of.get(tile_number, {}):
            alone[index] = False
            fragments[(tile_number, index)] = (result.geometries[index], feats[index], float(result.scores[index]),
                                               float(result.area_px[index]))
        if alone.any():
            frame = _frame(scene, result.geometries[alone], feats[alone], result.scores[alone],
                           np.ones(int(alone.sum())), clusterer)
            writer.add(frame)
            written += len(frame)
    if merged:
        merged_geoms, merged_feats, merged_scores, counts = [], [], [], []
        for group in merged:
            parts = [fragments.pop(member) for member in group]
            area_px = np.array([p[3] for p in parts])
            weights = area_px / max(area_px.sum(), 1)
            merged_geoms.append(merge_group(np.array([p[0] for p in parts], dtype=object)))
            merged_feats.append(weights @ np.stack([p[1] for p in parts]))
            merged_scores.append(float(weights @ np.array([p[2] for p in parts])))
            counts.append(len(parts))
        frame = _frame(scene, np.array(merged_geoms, dtype=object), np.asarray(merged_feats),
                       merged_scores, counts, clusterer)
        writer.add(frame)
        written += len(frame)
    return written


def read_layer_batches(path: Path, layer: str = "masks", batch_rows: int = BATCH_ROWS) -> Iterator:
    """A GeoPackage layer as GeoDataFrames of at most ``batch_rows`` rows, in file order."""
    import pyogrio

    total = pyogrio.read_info(path, layer=layer)["features"]
    for start in range(0, total, batch_rows):
        yield pyogrio.read_dataframe(path, layer=layer, skip_features=start, max_features=batch_rows)
    if total == 0:
        yield pyogrio.read_dataframe(path, layer=layer)
