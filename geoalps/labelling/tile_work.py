"""Pass 1 of a run, for one tile: read window -> map bands -> engine masks -> area filter and
dedupe -> keep by core -> features -> polygons.

``process_tile`` depends only on its arguments (a scene record with a path, a tile window, the
options), so it runs unchanged in this process or in any dask worker; the engine is loaded once
per process and cached.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from geoalps.inputs.bands import stretch_to_uint8
from geoalps.objects.features import compute_features
from geoalps.objects.masks import filter_by_area, remove_duplicates
from geoalps.options import LabelOptions
from geoalps.inputs.scene import Scene, read_window, valid_pixels
from geoalps.inputs.tiles import Tile
from geoalps.objects.polygons import mask_centroids, tile_geometries


@dataclass
class TileResult:
    """Everything pass 2 needs from one tile: its kept objects, never its pixels."""

    tile: Tile
    geometries: np.ndarray  # object array of shapely geometries in the scene CRS
    scores: np.ndarray
    area_px: np.ndarray
    truncated: np.ndarray  # cut by an inner tile edge: may continue in the neighbour
    seam_candidate: np.ndarray  # reaches into a part of the scene another tile also sees
    features: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: bool = False
    engine_seconds: float = 0.0
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.geometries)

    def feature_matrix(self, blocks: Sequence[str]) -> np.ndarray:
        if not len(self):
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([self.features[b] for b in blocks], axis=1)


_ENGINES: dict = {}


def engine_for(options: LabelOptions):
    """One engine per process and options: SAM weights load once, not once per tile."""
    from geoalps.engines import create_engine

    if options not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[options] = create_engine(options)
    return _ENGINES[options]


def process_tile(
    scene: Scene,
    tile: Tile,
    options: LabelOptions,
    bands: tuple[int, int, int],
    blocks: tuple[str, ...],
    spectral_bands: tuple[int, ...] | None = None,
) -> TileResult:
    """Masks, features and polygons of one tile (pass 1). Memory: the tile's pixels and masks."""
    return process_tiles(scene, [tile], options, bands, blocks, spectral_bands)[0]


def process_tiles(
    scene: Scene,
    tiles: Sequence[Tile],
    options: LabelOptions,
    bands: tuple[int, int, int],
    blocks: tuple[str, ...],
    spectral_bands: tuple[int, ...] | None = None,
) -> list[TileResult]:
    """Pass 1 for several tiles of one scene whose engine calls are batched (SAM's encoder on a
    GPU); one result per tile, each the same as :func:`process_tile` would give."""
    started = time.perf_counter()
    engine = engine_for(options)
    results: dict[int, TileResult] = {}
    pending = []  # (position, data, valid, rgb)
    for position, tile in enumerate(tiles):
        data = read_window(scene, tile.window)
        valid = valid_pixels(data, scene.nodata)
        if not valid.any():
            empty = np.zeros(0)
            results[position] = TileResult(tile, np.zeros(0, object), empty, empty, empty.astype(bool),
                                           empty.astype(bool), skipped=True)
            continue
        pending.append((position, data, valid, stretch_to_uint8(data, valid, bands, scene.stats)))
    if pending:
        engine_start = time.perf_counter()
        all_masks = engine.generate_many([p[3] for p in pending], [p[2] for p in pending])
        engine_seconds = (time.perf_counter() - engine_start) / len(pending)
        for (position, data, valid, _), tile_masks in zip(pending, all_masks):
            results[position] = _tile_result(scene, tiles[position], data, valid, tile_masks, engine,
                                             options, blocks, spectral_bands, engine_seconds)
    seconds = (time.perf_counter() - started) / len(tiles)
    for result in results.values():
        result.seconds = seconds
    return [results[i] for i in range(len(tiles))]


def _tile_result(scene: Scene, tile: Tile, data: np.ndarray, valid: np.ndarray, tile_masks, engine,
                 options: LabelOptions, blocks: tuple[str, ...], spectral_bands, engine_seconds: float) -> TileResult:
    """Everything after the engine for one tile: area filter, dedupe, core rule, features, polygons."""
    tile_masks = filter_by_area(tile_masks, valid, options.min_area_px, options.max_area_frac)
    if not engine.disjoint_masks:
        tile_masks = remove_duplicates(tile_masks, options.dedupe_iou)

    # Keep an object only in the tile whose core holds its centroid.
    centroids = mask_centroids(tile_masks) + (tile.col_off, tile.row_off)
    keep = np.array([tile.core_contains(c, r) for c, r in centroids], dtype=bool)
    tile_masks = tile_masks.select(keep)

    stretch, spectral_data = None, None
    if "spectral" in blocks:
        picked = [b - 1 for b in spectral_bands] if spectral_bands is not None else list(range(scene.count))
        spectral_data = data[picked]
        stretch = (np.asarray(scene.stats.low)[picked], np.asarray(scene.stats.high)[picked])
    features = compute_features(tile_masks, blocks, spectral_data, stretch)
    geometries = np.array(
        tile_geometries(tile_masks, tile.transform(scene.transform), max(1, options.min_area_px // 8)),
        dtype=object,
    )
    boxes = tile_masks.boxes  # (row0, col0, row1, col1) in tile pixels
    left, top, right, bottom = tile.inner_edges(scene.width, scene.height)
    truncated = (
        (left & (boxes[:, 1] == 0))
        | (top & (boxes[:, 0] == 0))
        | (right & (boxes[:, 3] >= tile.width))
        | (bottom & (boxes[:, 2] >= tile.height))
    )
    ic0, ir0, ic1, ir1 = tile.interior
    scene_boxes = boxes + (tile.row_off, tile.col_off, tile.row_off, tile.col_off)
    inside_interior = (
        (scene_boxes[:, 1] >= ic0) & (scene_boxes[:, 3] <= ic1)
        & (scene_boxes[:, 0] >= ir0) & (scene_boxes[:, 2] <= ir1)
    )
    return TileResult(
        tile=tile,
        geometries=geometries,
        scores=tile_masks.scores.astype(np.float32),
        area_px=tile_masks.areas,
        truncated=np.asarray(truncated, dtype=bool),
        seam_candidate=~inside_interior | truncated,  # with --overlap 0 the interior is the whole tile
        features=features,
        engine_seconds=engine_seconds,
    )


def check_engine(options: LabelOptions) -> tuple[str, bool, int]:
    """Load the engine here (cached for later tiles) and describe it: run once before the tiles so
    a bad checkpoint is one clear error, not one per tile. Returns (description, whether it gives
    an embedding, tiles per engine call)."""
    engine = engine_for(options)
    return engine.describe(), engine.provides_embedding, engine.tiles_per_call
