"""Pass 1 of a run, for one tile: read window -> map bands -> engine masks -> area filter and
dedupe -> keep by core -> features -> polygons.

``process_tiles`` depends only on its :class:`TileTask` (a scene record with a path, tile
windows, the options), so it runs unchanged in this process or in any dask worker; the engine is
loaded once per process and cached.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from affine import Affine

from geoalps.engines.base import EngineTile
from geoalps.inputs.bands import stretch_to_uint8
from geoalps.inputs.crs import pixel_size_m as crs_pixel_size_m
from geoalps.objects.features import compute_features
from geoalps.objects.masks import filter_by_area, remove_duplicates
from geoalps.options import LabelOptions
from geoalps.inputs.scene import Scene, read_window, valid_in_window
from geoalps.inputs.tiles import Tile
from geoalps.objects.polygons import mask_centroids, tile_geometries
from geoalps.objects.seams import seam_flags
from geoalps.objects.tile_result import TileResult


_ENGINES: dict = {}


@dataclass(frozen=True)
class TileTask:
    """One unit of pass 1: neighbouring tiles of one scene and all a worker needs for them.

    Plain picklable data (the scene record holds a path, never an open dataset), so the same task
    runs in this process or on any dask worker. ``bands``: the scene's three bands the engine
    sees (``--bands``); ``blocks``: the feature blocks to compute; ``spectral_bands``: the bands
    spectral features use (None: every band); ``tile_batch``: ``--tile-batch``."""

    scene: Scene
    tiles: tuple[Tile, ...]
    options: LabelOptions
    bands: tuple[int, int, int]
    blocks: tuple[str, ...]
    spectral_bands: tuple[int, ...] | None = None
    tile_batch: int = 0


def pixel_size_m(scene: Scene) -> float | None:
    """Ground size of one pixel of ``scene`` in metres (square root of the pixel's area; degrees
    converted at the scene's central latitude); None for scenes in pixel coordinates. A scene
    property, the same for all its tiles, so engines that scale with it stay seam-consistent."""
    return crs_pixel_size_m(scene.crs_wkt, tuple(scene.transform), scene.width, scene.height)


def all_bands_uint8(data: np.ndarray, valid: np.ndarray, scene: Scene) -> np.ndarray:
    """(bands, H, W) -> (H, W, bands) uint8, every band on the scene's stretch (the RGB view's
    stretch, three bands at a time). For engines with ``wants_bands``; costs one uint8 copy."""
    count = data.shape[0]
    out = np.empty(data.shape[1:] + (count,), np.uint8)
    for start in range(0, count, 3):
        picked = [min(start + i, count - 1) + 1 for i in range(3)]
        out[..., start:start + 3] = stretch_to_uint8(data, valid, tuple(picked), scene.stats)[..., :count - start]
    return out


def engine_tile(scene: Scene, data: np.ndarray, valid: np.ndarray, bands: tuple[int, int, int],
                wants_bands: bool, size_m: float | None) -> EngineTile:
    """What an engine sees of one read tile: the 8-bit view of ``bands`` and, for engines with
    ``wants_bands``, every band on the scene's stretch; ``size_m`` from :func:`pixel_size_m`.
    The stretch is per band, so with every band at hand the view is picked from them, not
    stretched again."""
    if not wants_bands:
        return EngineTile(stretch_to_uint8(data, valid, bands, scene.stats), valid, None, size_m)
    every = all_bands_uint8(data, valid, scene)
    return EngineTile(every[..., [band - 1 for band in bands]], valid, every, size_m)


def engine_for(options: LabelOptions, tile_batch: int = 0):
    """One engine per process and options: SAM weights load once, not once per tile."""
    from geoalps.engines import create_engine

    key = (options, tile_batch)
    if key not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[key] = create_engine(options, tile_batch)
    return _ENGINES[key]


def process_tiles(task: TileTask) -> list[TileResult]:
    """Masks, features and polygons of a task's tiles (pass 1), their engine calls batched when
    there are several (SAM's encoder on a GPU); one result per tile, the same whatever the batch.
    Memory: the tiles' pixels and masks."""
    started = time.perf_counter()
    scene, tiles, options, blocks = task.scene, task.tiles, task.options, task.blocks
    engine = engine_for(options, task.tile_batch)
    results: dict[int, TileResult] = {}
    pending = []  # (position, data, valid, EngineTile)
    size_m = pixel_size_m(scene)
    for position, tile in enumerate(tiles):
        data = read_window(scene, tile.window)
        valid = valid_in_window(scene, tile.window, data)
        if not valid.any():
            empty = np.zeros(0)
            results[position] = TileResult(tile, np.zeros(0, object), empty, empty, empty.astype(bool),
                                           empty.astype(bool), skipped=True)
            continue
        pending.append((position, data, valid, engine_tile(scene, data, valid, task.bands, engine.wants_bands, size_m)))
    if pending:
        engine_start = time.perf_counter()
        all_masks = engine.generate_tiles([p[3] for p in pending])
        engine_seconds = (time.perf_counter() - engine_start) / len(pending)
        for (position, data, valid, _), tile_masks in zip(pending, all_masks):
            results[position] = _tile_result(scene, tiles[position], data, valid, tile_masks, engine,
                                             options, blocks, task.spectral_bands, engine_seconds, size_m)
    seconds = (time.perf_counter() - started) / len(tiles)
    for result in results.values():
        result.seconds = seconds
    return [results[i] for i in range(len(tiles))]


def _tile_result(scene: Scene, tile: Tile, data: np.ndarray, valid: np.ndarray, tile_masks, engine,
                 options: LabelOptions, blocks: tuple[str, ...], spectral_bands, engine_seconds: float,
                 pixel_size: float | None) -> TileResult:
    """Everything after the engine for one tile: area filter, dedupe, core rule, features, polygons."""
    min_area_px = engine.min_mask_px(pixel_size)
    tile_masks = filter_by_area(tile_masks, valid, min_area_px, engine.max_mask_frac())
    if not engine.disjoint_masks:
        tile_masks = remove_duplicates(tile_masks, options.dedupe_iou)

    # Keep an object only in the tile whose core holds its centroid.
    centroids = mask_centroids(tile_masks) + (tile.col_off, tile.row_off)
    keep = np.array([tile.core_contains(c, r) for c, r in centroids], dtype=bool)
    tile_masks = tile_masks.select(keep)

    stretch, spectral_data, names = None, None, None
    if "spectral" in blocks or "index" in blocks:
        picked = [b - 1 for b in spectral_bands] if spectral_bands is not None else list(range(scene.count))
        spectral_data = data[picked]
        stretch = (np.asarray(scene.stats.low)[picked], np.asarray(scene.stats.high)[picked])
        roles = scene.band_roles.names
        names = tuple(roles[i] if i < len(roles) else None for i in picked)
    features = compute_features(tile_masks, blocks, spectral_data, stretch, names)
    fit_regions = tile_masks.fit_regions()
    fit_features = {} if fit_regions is None else compute_features(fit_regions, blocks, spectral_data, stretch, names)
    geometries = np.array(
        # scene-pixel coordinates (integer vertices) until pass 2 writes them (geoalps.objects.coverage)
        tile_geometries(tile_masks, Affine.translation(tile.col_off, tile.row_off), max(1, min_area_px // 8)),
        dtype=object,
    )
    truncated, seam_candidate = seam_flags(tile, tile_masks.boxes, scene.width, scene.height)
    return TileResult(
        tile=tile,
        geometries=geometries,
        scores=tile_masks.scores.astype(np.float32),
        area_px=tile_masks.areas,
        truncated=truncated,
        seam_candidate=seam_candidate,
        features=features,
        engine_seconds=engine_seconds,
        disjoint=bool(engine.disjoint_masks),
        fit_features=fit_features,
        fit_area_px=None if fit_regions is None else fit_regions.areas,
    )


def check_engine(options: LabelOptions, tile_batch: int = 0) -> tuple[str, bool, int]:
    """Load the engine here (cached for later tiles) and describe it: run once before the tiles so
    a bad checkpoint is one clear error, not one per tile. Returns (description, whether it gives
    an embedding, tiles per engine call)."""
    engine = engine_for(options, tile_batch)
    return engine.describe(), engine.provides_embedding, engine.tiles_per_call
