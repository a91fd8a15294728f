"""``label``: scenes in, pseudo-classed polygons (and label rasters) out. The only module that
knows the whole path of the data:

    pass 1, per tile: read window -> map bands -> engine masks -> area filter, dedupe -> keep by
            core -> features -> polygons; k-means partial_fit on the features, in tile order
    pass 2, cheap:    merge seam fragments -> predict classes from stored features -> write

Two passes because an object's class is only known once k-means has seen all objects. A tile's
work depends only on (scene, tile, options), which is what lets tiles run anywhere.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from geoalps.bands import normalise_bands, resolve_bands, stretch_to_uint8
from geoalps.cluster import OnlineKMeans
from geoalps.errors import GeoAlpsError
from geoalps.features import compute_features, feature_blocks
from geoalps.masks import filter_by_area, remove_duplicates
from geoalps.options import LabelOptions
from geoalps.scene import Scene, open_scene, read_window, valid_pixels
from geoalps.tiling import Tile, plan_tiles
from geoalps.vectorize import mask_centroids, merge_group, seam_groups, tile_geometries

#: File types taken from a folder given as a scene (chips such as iSAID / Potsdam patches).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img")


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


# -- pass 1: one tile -------------------------------------------------------------------------
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
    started = time.perf_counter()
    data = read_window(scene, tile.window)
    valid = valid_pixels(data, scene.nodata)
    empty = np.zeros(0)
    if not valid.any():
        return TileResult(tile, np.zeros(0, object), empty, empty, empty.astype(bool),
                          empty.astype(bool), skipped=True, seconds=time.perf_counter() - started)
    rgb = stretch_to_uint8(data, valid, bands, scene.stats)
    engine = engine_for(options)
    engine_start = time.perf_counter()
    tile_masks = engine.generate(rgb, valid)
    engine_seconds = time.perf_counter() - engine_start
    tile_masks = filter_by_area(tile_masks, valid, options.min_area_px, options.max_area_frac)
    tile_masks = remove_duplicates(tile_masks, options.dedupe_iou)

    # Keep an object only in the tile whose core holds its centroid.
    centroids = mask_centroids(tile_masks) + (tile.col_off, tile.row_off)
    keep = np.array([tile.core_contains(c, r) for c, r in centroids], dtype=bool)
    tile_masks = tile_masks.select(keep)

    bands_norm = normalise_bands(data, scene.stats)
    if spectral_bands is not None:
        bands_norm = bands_norm[[b - 1 for b in spectral_bands]]
    features = compute_features(tile_masks, bands_norm, blocks)
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
        seam_candidate=~inside_interior,
        features=features,
        engine_seconds=engine_seconds,
        seconds=time.perf_counter() - started,
    )


# -- progress ---------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over tiles (tiles/s), machine-readable lines for the QGIS plugin, or nothing."""

    def __init__(self, total: int, quiet: bool, lines: bool) -> None:
        self.total, self.lines, self.done = max(total, 1), lines, 0
        self.bar = None
        if not quiet and not lines:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="tile", desc="labelling", file=sys.stderr, dynamic_ncols=True)

    def step(self, message: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.lines:
            self.emit(90.0 * self.done / self.total, f"tile {self.done}/{self.total} {message}")

    def emit(self, percent: float, message: str) -> None:
        if self.lines:
            print(f"geoalps-progress: {percent:.1f} {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the whole run ----------------------------------------------------------------------------
def expand_scene_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Scene files in the order given; a folder stands for the image files in it, sorted."""
    out: list[str] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise GeoAlpsError(f"{path}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(str(p) for p in found)
        else:
            out.append(str(path))
    if not out:
        raise GeoAlpsError("no scenes given")
    return out


def _raster_targets(raster_out: str | os.PathLike | None, scenes: list[Scene]) -> list[Path | None]:
    if raster_out is None:
        return [None] * len(scenes)
    raster_out = Path(raster_out)
    as_folder = raster_out.is_dir() or str(raster_out).endswith(os.sep) or len(scenes) > 1
    if not as_folder:
        return [raster_out]
    if not raster_out.is_dir():
        raise GeoAlpsError(f"{raster_out}: --raster-out must be an existing folder when labelling several scenes")
    targets = [raster_out / f"{Path(s.path).stem}.labels.tif" for s in scenes]
    if len(set(targets)) != len(targets):
        raise GeoAlpsError(f"{raster_out}: several scenes share a file name, so their label rasters would collide")
    return targets


def label(
    scenes: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    *,
    raster_out: str | os.PathLike | None = None,
    kmeans_model: str | os.PathLike | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    progress_lines: bool = False,
    **options,
):
    """Label scenes into pseudo-classed polygons; returns a GeoDataFrame (layer ``masks``).

    Args:
        scenes: raster paths (or folders of image chips); several scenes are clustered together
            so a pseudo-class means the same thing in all of them.
        output: GeoPackage to write (layer ``masks``); None to only return the GeoDataFrame.
        raster_out: pseudo-label GeoTIFF on the scene's grid, or a folder (``<scene>.labels.tif``
            each) when there are several scenes.
        kmeans_model: saved k-means; reused (frozen) when the file exists, else fitted and saved.
        overwrite: replace existing outputs instead of refusing.
        quiet / progress_lines: no progress bar / machine-readable ``geoalps-progress:`` lines.
        **options: the fields of :class:`geoalps.options.LabelOptions` (``engine``, ``checkpoint``,
            ``bands``, ``tile_size``, ``overlap``, ``classes``, ``seed``, ...).

    Scenes in different CRSs are reprojected to the first scene's CRS in the returned layer;
    each label raster stays on its own scene's grid. Memory: one tile's pixels at a time plus
    every object's polygon and features (objects, not pixels).
    """
    started = time.perf_counter()
    opts = LabelOptions(**options).validated()
    paths = expand_scene_paths([scenes] if isinstance(scenes, (str, os.PathLike)) else scenes)
    opened = [open_scene(p, nodata=opts.nodata, allow_pixel_coords=opts.allow_pixel_coords) for p in paths]
    if len({s.georeferenced for s in opened}) > 1:
        raise GeoAlpsError(
            f"{next(s.path for s in opened if not s.georeferenced)}: has no georeferencing while "
            "other scenes do; label pixel-coordinate chips in a separate run"
        )
    band_maps = [resolve_bands(opts.bands, s.count, s.path) for s in opened]
    # Spectral features use every band; if scenes differ in band count, only the mapped three
    # are comparable across scenes.
    same_bands = len({s.count for s in opened}) == 1
    spectral_bands = [None if same_bands else bm for bm in band_maps]
    if output is not None:
        from geoalps.io import check_writable

        check_writable(output, overwrite)
    raster_targets = _raster_targets(raster_out, opened)
    for target in raster_targets:
        if target is not None:
            from geoalps.io import check_writable

            check_writable(target, overwrite)

    clusterer: OnlineKMeans | None = None
    if kmeans_model is not None and Path(kmeans_model).exists():
        clusterer = OnlineKMeans.load(kmeans_model)

    from geoalps.engines import resolve_engine_name

    engine = engine_for(opts)
    if not quiet:
        reason = " (no SAM checkpoint found)" if opts.engine == "auto" and resolve_engine_name(opts) == "classical" else ""
        print(f"geoalps: engine {engine.describe()}{reason}", file=sys.stderr)
    blocks = feature_blocks(opts.features, engine.provides_embedding)

    plans = [plan_tiles(s.width, s.height, opts.tile_size, opts.overlap, i) for i, s in enumerate(opened)]
    n_tiles = sum(len(p) for p in plans)
    progress = Progress(n_tiles, quiet, progress_lines)
    results: list[TileResult] = []
    try:
        for scene, plan, bands, spectral in zip(opened, plans, band_maps, spectral_bands):
            for tile in plan:
                result = process_tile(scene, tile, opts, bands, blocks, spectral)
                results.append(result)
                if len(result):
                    features = result.feature_matrix(blocks)
                    if clusterer is None:
                        widths = {b: result.features[b].shape[1] for b in blocks}
                        clusterer = OnlineKMeans(opts.classes, widths, seed=opts.seed)
                    elif clusterer.frozen and not getattr(clusterer, "_checked", False):
                        clusterer.check_compatible({b: result.features[b].shape[1] for b in blocks}, str(kmeans_model))
                        clusterer._checked = True
                    clusterer.partial_fit(features)
                progress.step(f"{scene.name} {tile.key}: {len(result)} objects")
    finally:
        progress.close()
    if clusterer is None:
        # A flat or featureless scene: an empty (but valid) result beats an error.
        if not quiet:
            print(f"geoalps: warning: no objects found in {', '.join(s.name for s in opened)} "
                  "(try a smaller --min-area-px or a larger --max-area-frac)", file=sys.stderr)
    else:
        clusterer.finish()
    progress.emit(92.0, "assigning classes")

    gdf = _assemble(opened, results, blocks, clusterer)
    n_classes = clusterer.effective_classes if clusterer is not None else opts.classes
    if clusterer is not None and n_classes < opts.classes and not clusterer.frozen and not quiet:
        print(f"geoalps: only {n_classes} distinct objects found, so {n_classes} classes instead of {opts.classes}", file=sys.stderr)

    progress.emit(95.0, "writing outputs")
    from geoalps.io import atomic_path, write_geopackage_to, write_label_raster_to

    with contextlib.ExitStack() as stack:
        for scene, target in zip(opened, raster_targets):
            if target is None:
                continue
            tmp = stack.enter_context(atomic_path(target, overwrite))
            mine = gdf.attrs["_scene_geometries"][scene.path]
            write_label_raster_to(tmp, scene, mine[0], mine[1], max(n_classes, opts.classes))
        if output is not None:
            tmp = stack.enter_context(atomic_path(output, overwrite))
            write_geopackage_to(tmp, gdf, n_classes=max(n_classes, opts.classes))
        if kmeans_model is not None and clusterer is not None and not clusterer.frozen:
            clusterer.save(kmeans_model)
    del gdf.attrs["_scene_geometries"]

    engine_seconds = sum(r.engine_seconds for r in results)
    wall = time.perf_counter() - started
    gdf.attrs["geoalps"] = {
        "engine": engine.describe(),
        "tiles": n_tiles,
        "tiles_skipped": sum(r.skipped for r in results),
        "objects": len(gdf),
        "classes_used": int(gdf["pseudo_class"].nunique()) if len(gdf) else 0,
        "seconds": wall,
        "engine_seconds": engine_seconds,
        "tiles_per_second": n_tiles / wall if wall else 0.0,
    }
    progress.emit(100.0, f"done: {len(gdf)} objects")
    return gdf


def _assemble(scenes: list[Scene], results: list[TileResult], blocks, clusterer: OnlineKMeans | None):
    """Pass 2: merge seam fragments per scene, classify, and build the output table."""
    import geopandas as gpd
    import shapely

    frames = []
    scene_geometries = {}
    for index, scene in enumerate(scenes):
        mine = [r for r in results if r.tile.scene_index == index and len(r)]
        if not mine:
            scene_geometries[scene.path] = (np.zeros(0, object), np.zeros(0, np.int32))
            continue
        geoms = np.concatenate([r.geometries for r in mine])
        tile_ids = np.concatenate([np.full(len(r), i) for i, r in enumerate(mine)])
        scores = np.concatenate([r.scores for r in mine]).astype(np.float64)
        area_px = np.concatenate([r.area_px for r in mine]).astype(np.float64)
        truncated = np.concatenate([r.truncated for r in mine])
        candidate = np.concatenate([r.seam_candidate for r in mine])
        feats = np.concatenate([r.feature_matrix(blocks) for r in mine])

        # Only objects reaching into shared parts of the scene can meet another tile's objects.
        groups = [np.array([i]) for i in np.flatnonzero(~candidate)]
        cand = np.flatnonzero(candidate)
        for group in seam_groups(geoms[cand], tile_ids[cand], truncated[cand]):
            groups.append(cand[group])
        groups.sort(key=lambda g: int(g[0]))

        merged_geoms, merged_feats, merged_scores, merged_px, fragments = [], [], [], [], []
        for g in groups:
            weights = area_px[g] / area_px[g].sum()
            merged_geoms.append(merge_group(geoms[g]))
            merged_feats.append(weights @ feats[g])
            merged_scores.append(float(weights @ scores[g]))
            fragments.append(len(g))
        merged_geoms = np.array(merged_geoms, dtype=object)
        merged_feats = np.asarray(merged_feats)
        classes = clusterer.predict(merged_feats)
        distance = clusterer.distances(merged_feats)
        pixel_area = abs(scene.transform.a * scene.transform.e - scene.transform.b * scene.transform.d)
        merged_px = np.rint(shapely.area(merged_geoms) / pixel_area).astype(np.int64) if pixel_area else np.zeros(len(merged_geoms), np.int64)
        scene_geometries[scene.path] = (merged_geoms, classes)
        frame = gpd.GeoDataFrame(
            {
                "pseudo_class": classes.astype(np.int32),
                "score": np.round(np.asarray(merged_scores), 6),
                "area_px": merged_px,
                "n_fragments": np.asarray(fragments, dtype=np.int32),
                "class_distance": np.round(distance.astype(np.float64), 6),
                "scene": scene.name,
            },
            geometry=list(merged_geoms),
            crs=scene.crs_wkt,
        )
        frames.append(frame)
    if frames:
        target_crs = frames[0].crs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = [f if f.crs == target_crs or target_crs is None else f.to_crs(target_crs) for f in frames]
        import pandas as pd

        gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=target_crs)
    else:
        gdf = gpd.GeoDataFrame(
            {"pseudo_class": np.zeros(0, np.int32), "score": np.zeros(0), "area_px": np.zeros(0, np.int64),
             "n_fragments": np.zeros(0, np.int32), "class_distance": np.zeros(0), "scene": np.zeros(0, str)},
            geometry=[], crs=scenes[0].crs_wkt,
        )
    gdf.insert(0, "instance_id", np.arange(1, len(gdf) + 1, dtype=np.int64))
    with warnings.catch_warnings():  # geographic CRSs: area in degrees squared, as documented
        warnings.simplefilter("ignore", UserWarning)
        gdf.insert(4, "area", gdf.geometry.area.round(6))
    gdf.attrs["_scene_geometries"] = scene_geometries
    return gdf
