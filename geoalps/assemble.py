"""Pass 2 of a run: classify every object from its stored features, merge seam fragments, and
stream the result into per-scene GeoPackage layers.

Tiles are read back from the work store one at a time. Objects entirely inside their tile's
interior (seen by no other tile) are classified and written straight away; only seam candidates
are held until the scene is done, so memory follows the length of the seams, not the scene area.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from geoalps.cluster import OnlineKMeans
from geoalps.scene import Scene
from geoalps.tilework import TileResult
from geoalps.tiling import Tile
from geoalps.vectorize import merge_group, seam_groups

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
    on_tile=None,
) -> int:
    """Classify, merge and write one scene's objects; returns the number written.

    Seam candidates from all tiles are merged with :func:`geoalps.vectorize.seam_groups`; a merged
    object's features, score and class come from its fragments weighted by pixel area.
    """
    held: list[TileResult] = []
    held_tile: list[np.ndarray] = []
    written = 0
    for tile_number, tile in enumerate(tiles):
        result = load(tile)
        if on_tile is not None:
            on_tile()
        if not len(result):
            continue
        feats = result.feature_matrix(blocks)
        alone = ~result.seam_candidate
        if alone.any():
            frame = _frame(scene, result.geometries[alone], feats[alone], result.scores[alone],
                           np.ones(int(alone.sum())), clusterer)
            writer.add(frame)
            written += len(frame)
        if (~alone).any():
            held.append(_subset(result, ~alone, feats))
            held_tile.append(np.full(int((~alone).sum()), tile_number))
    if held:
        geoms = np.concatenate([h.geometries for h in held])
        feats = np.concatenate([h.features["_all"] for h in held])
        scores = np.concatenate([h.scores for h in held]).astype(np.float64)
        area_px = np.concatenate([h.area_px for h in held]).astype(np.float64)
        truncated = np.concatenate([h.truncated for h in held])
        tile_ids = np.concatenate(held_tile)
        merged_geoms, merged_feats, merged_scores, fragments = [], [], [], []
        tile_bounds = np.array([t.envelope(scene.transform) for t in tiles])
        for group in seam_groups(geoms, tile_ids, truncated, tile_bounds):
            weights = area_px[group] / max(area_px[group].sum(), 1)
            merged_geoms.append(merge_group(geoms[group]))
            merged_feats.append(weights @ feats[group])
            merged_scores.append(float(weights @ scores[group]))
            fragments.append(len(group))
        frame = _frame(scene, np.array(merged_geoms, dtype=object), np.asarray(merged_feats),
                       merged_scores, fragments, clusterer)
        writer.add(frame)
        written += len(frame)
    return written


def _subset(result: TileResult, keep: np.ndarray, feats: np.ndarray) -> TileResult:
    return TileResult(
        tile=result.tile, geometries=result.geometries[keep], scores=result.scores[keep],
        area_px=result.area_px[keep], truncated=result.truncated[keep],
        seam_candidate=result.seam_candidate[keep], features={"_all": feats[keep]},
    )


def read_layer_batches(path: Path, layer: str = "masks", batch_rows: int = BATCH_ROWS) -> Iterator:
    """A GeoPackage layer as GeoDataFrames of at most ``batch_rows`` rows, in file order."""
    import pyogrio

    total = pyogrio.read_info(path, layer=layer)["features"]
    for start in range(0, total, batch_rows):
        yield pyogrio.read_dataframe(path, layer=layer, skip_features=start, max_features=batch_rows)
    if total == 0:
        yield pyogrio.read_dataframe(path, layer=layer)
