"""``label``: scenes in, pseudo-classed polygons (and label rasters) out. The only module that
knows the whole path of the data:

    pass 1, per tile (tilework.py), in this process or on dask workers: masks -> features ->
            polygons, each result saved to the work folder as it arrives; k-means partial_fit on
            the features in tile order (so the result does not depend on the worker count)
    pass 2 (assemble.py), streaming: classify from stored features, merge seam fragments, write
            per-scene layers; then the output GeoPackage and label rasters

Two passes because an object's class is only known once k-means has seen all objects. Storing
tile results makes pass 2 cheap, ``--resume`` natural and memory flat.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from geoalps.inputs.bands import resolve_bands
from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.errors import GeoAlpsError
from geoalps.objects.features import feature_blocks
from geoalps.options import LabelOptions
from geoalps.labelling.parallel import TileFailure, TileRunner
from geoalps.inputs.scene import Scene, open_scene
from geoalps.objects.seams import SeamIndex
from geoalps.labelling.tile_work import TileResult, check_engine, process_tiles
from geoalps.inputs.tiles import Tile, plan_tiles
from geoalps.labelling.work_store import WorkStore, fingerprint, settings_digest

#: File types taken from a folder given as a scene (chips such as iSAID / Potsdam patches).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".vrt", ".img")


# -- progress ---------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over tiles (tiles/s), machine-readable lines for the QGIS plugin, or nothing."""

    def __init__(self, total: int, quiet: bool, lines: bool, done: int = 0, desc: str = "labelling",
                 start: float = 0.0, span: float = 90.0) -> None:
        self.total, self.lines, self.done = max(total, 1), lines, done
        self.start, self.span = start, span
        self.bar = None
        if not quiet and not lines:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, unit="tile", desc=desc, file=sys.stderr, dynamic_ncols=True)

    def step(self, message: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.lines:
            _emit(True, self.start + self.span * self.done / self.total, f"tile {self.done}/{self.total} {message}")

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
    scenes,
    output: str | os.PathLike | None = None,
    *,
    raster_out: str | os.PathLike | None = None,
    kmeans_model: str | os.PathLike | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    progress_lines: bool = False,
    workers: int = 1,
    scheduler: str | None = None,
    resume: bool = False,
    keep_work: bool = False,
    work_dir: str | os.PathLike | None = None,
    return_gdf: bool = True,
    return_labels: bool = False,
    **options,
):
    """Label scenes into pseudo-classed polygons; returns a GeoDataFrame (layer ``masks``).

    Args:
        scenes: raster paths, folders of image chips, or rioxarray DataArrays (with CRS and
            transform; dask-backed is fine); several scenes are clustered together so a
            pseudo-class means the same thing in all of them.
        output: GeoPackage to write (layer ``masks``); None to only return the GeoDataFrame.
        raster_out: pseudo-label GeoTIFF on the scene's grid, or a folder (``<scene>.labels.tif``
            each) when there are several scenes.
        kmeans_model: saved k-means; reused (frozen) when the file exists, else fitted and saved.
        overwrite: replace existing outputs (and a stale work folder) instead of refusing.
        quiet / progress_lines: no progress bar / machine-readable ``geoalps-progress:`` lines.
        workers / scheduler: tiles in parallel on a local dask cluster of ``workers`` processes,
            or on an existing cluster at ``scheduler`` ("tcp://host:port"); 1 runs in-process.
        resume / keep_work / work_dir: tile results are kept in ``work_dir`` (default
            ``OUTPUT.geoalps-work`` beside the output) as they finish; ``resume`` continues an
            interrupted run from there; the folder is removed at the end unless ``keep_work``.
        return_gdf: False returns only the run's statistics (a dict), never loading all polygons.
        return_labels: also return the label raster(s) as rioxarray DataArray(s): (gdf, labels).
        **options: the fields of :class:`geoalps.options.LabelOptions` (``engine``, ``checkpoint``,
            ``bands``, ``tile_size``, ``overlap``, ``classes``, ``seed``, ...).

    Scenes in different CRSs are reprojected to the first scene's CRS in the output layer; each
    label raster stays on its own scene's grid. Memory: per worker one tile's pixels and masks;
    in this process the k-means, the seam candidates of one scene and one batch of polygons.
    """
    started = time.perf_counter()
    opts = LabelOptions(**options).validated()
    with contextlib.ExitStack() as cleanup:
        run = _prepare(scenes, output, raster_out, kmeans_model, overwrite, return_labels, work_dir,
                       resume, opts, cleanup)
        with TileRunner(workers, scheduler) as runner:
            description, blocks, batch = _start_engine(runner, run, opts, quiet, scheduler)
            seams = SeamIndex(run.plans, [s.transform for s in run.scenes])
            feeder = _pass1(runner, run, opts, blocks, batch, seams, quiet, progress_lines)
        clusterer = _finish_clustering(feeder.clusterer, run, opts, quiet)
        n_classes = max(clusterer.effective_classes if clusterer is not None else 0, opts.classes)
        scene_layers = _pass2(run, blocks, clusterer, seams, quiet, progress_lines)
        _emit(progress_lines, 95.0, "writing outputs")
        stats = _write_outputs(run.scenes, scene_layers, output, run.raster_targets, n_classes, overwrite,
                               kmeans_model, clusterer)
        gdf = None
        if return_gdf:  # the written file already holds ids, areas and the target CRS
            gdf = _read_output(output) if output is not None else _read_all(scene_layers, run.scenes)
        if not keep_work or run.store.temporary:
            run.store.remove()
        wall = time.perf_counter() - started
        stats.update({
            "engine": description, "tiles": len(run.tiles), "tiles_skipped": feeder.skipped,
            "tiles_resumed": run.resumed, "seconds": wall, "engine_seconds": feeder.engine_seconds,
            "tile_seconds": feeder.tile_seconds, "tiles_per_second": (len(run.tiles) - run.resumed) / wall if wall else 0.0,
            "workers": runner.workers if runner.distributed else 1,
        })
        _emit(progress_lines, 100.0, f"done: {stats['objects']} objects")
        if not return_gdf:
            return stats
        gdf.attrs["geoalps"] = stats
        if return_labels:
            import rioxarray

            arrays = [rioxarray.open_rasterio(t).squeeze("band", drop=True).load() for t in run.raster_targets]
            return gdf, arrays[0] if len(arrays) == 1 else arrays
        return gdf


@dataclass
class _Run:
    """What the phases of one run share: the opened scenes, their tile plans and the work store."""

    scenes: list[Scene]
    band_maps: list[tuple[int, int, int]]
    spectral_bands: list[tuple[int, int, int] | None]
    raster_targets: list[Path | None]
    clusterer: OnlineKMeans | None
    plans: list
    tiles: list
    settings: dict
    store: WorkStore
    done: set[str]
    resumed: int
    kmeans_model: str | os.PathLike | None


def _prepare(scenes, output, raster_out, kmeans_model, overwrite, return_labels, work_dir, resume,
             opts: LabelOptions, cleanup: contextlib.ExitStack) -> _Run:
    """Open and check every input and output before any tile work, so bad input fails in seconds."""
    from geoalps.outputs.vector import check_writable

    paths = expand_scene_paths(_materialise_arrays(scenes, cleanup, opts.allow_pixel_coords))
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
    if output is not None:
        check_writable(output, overwrite)
    if return_labels and raster_out is None:
        raster_out = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="geoalps-labels-"))
    raster_targets = _raster_targets(raster_out, opened)
    for target in raster_targets:
        if target is not None:
            check_writable(target, overwrite)
    clusterer = OnlineKMeans.load(kmeans_model) if kmeans_model is not None and Path(kmeans_model).exists() else None
    plans = [plan_tiles(s.width, s.height, opts.tile_size, opts.overlap, i) for i, s in enumerate(opened)]
    tiles = [t for plan in plans for t in plan]
    settings = {**{k: v for k, v in opts.as_dict().items() if k != "tile_batch"},  # batching changes no result
                "bands_resolved": [list(b) for b in band_maps],
                "kmeans_model": str(kmeans_model) if clusterer is not None else None}
    if work_dir is None and output is not None:
        work_dir = f"{output}.geoalps-work"
    store = WorkStore.open(work_dir, fingerprint(opened, settings), resume=resume, overwrite=overwrite)
    if store.temporary:
        cleanup.callback(store.remove)
    done = store.finished() & {t.key for t in tiles}
    return _Run(opened, band_maps, [None if same_bands else bm for bm in band_maps], raster_targets, clusterer,
                plans, tiles, settings, store, done, len(done), kmeans_model)


def _start_engine(runner: TileRunner, run: _Run, opts: LabelOptions, quiet: bool, scheduler) -> tuple[str, tuple, int]:
    """Load the engine in every worker (or here) and say which one runs, on stderr."""
    description, has_embedding, batch = runner.on_every_worker(check_engine, opts)
    if not quiet:
        from geoalps.engines import resolve_engine_name

        reason = " (no SAM checkpoint found)" if opts.engine == "auto" and resolve_engine_name(opts) == "classical" else ""
        where = f", cluster {scheduler}" if scheduler else (f", {runner.workers} workers" if runner.distributed else "")
        resumed = f", resuming: {run.resumed} of {len(run.tiles)} tiles already done" if run.resumed else ""
        batched = f", {batch} tiles per engine call" if batch > 1 else ""
        print(f"geoalps: engine {description}{reason}{where}{batched}{resumed}", file=sys.stderr)
    return description, feature_blocks(opts.features, has_embedding), batch


def _pass1(runner: TileRunner, run: _Run, opts: LabelOptions, blocks, batch: int, seams: SeamIndex,
           quiet: bool, progress_lines: bool) -> "_OrderedFeeder":
    """Every tile not yet in the work store, in any order; k-means is fed strictly in plan order
    and seam decisions are made as tiles finish (``seams``).

    A task is ``batch`` neighbouring tiles of one scene (engines that batch, SAM on a GPU) or one
    tile. A tile that keeps failing does not stop the others: all failures are reported together
    at the end, and the finished tiles stay in the work store for ``--resume``.
    """
    done = set(run.done)
    groups = _task_groups([t for t in run.tiles if t.key not in done], batch)
    tasks = [(run.scenes[g[0].scene_index], g, opts, run.band_maps[g[0].scene_index], blocks,
              run.spectral_bands[g[0].scene_index]) for g in groups]
    digest = settings_digest(run.settings)
    keys = [f"geoalps-{digest}-{g[0].key}" + (f"+{len(g) - 1}" if len(g) > 1 else "") for g in groups]
    progress = Progress(len(run.tiles), quiet, progress_lines, done=len(done))
    feeder = _OrderedFeeder(run.tiles, run.store, blocks, run.clusterer, opts, run.kmeans_model)
    failures: list[tuple[Tile, TileFailure]] = []
    try:
        feeder.advance(done)
        for tile in run.tiles:  # tiles finished by an interrupted run
            if tile.key in done:
                seams.add(tile, run.store.load(tile.key))
        for index, results in runner.run(process_tiles, tasks, keys):
            for position, tile in enumerate(groups[index]):
                name = run.scenes[tile.scene_index].name
                if isinstance(results, TileFailure):
                    failures.append((tile, results))
                    progress.step(f"{name} {tile.key}: FAILED")
                    continue
                result = results[position]
                run.store.save(tile.key, result)
                done.add(tile.key)
                feeder.advance(done, fresh={tile.key: result})
                seams.add(tile, result)
                progress.step(f"{name} {tile.key}: {len(result)} objects")
    except KeyboardInterrupt:
        progress.close()
        if not run.store.temporary:
            print(f"geoalps: interrupted; finished tiles are kept in {run.store.folder}; "
                  "rerun the same command with --resume to continue", file=sys.stderr)
        raise
    finally:
        progress.close()
    if failures:
        raise GeoAlpsError(_failure_message(failures, run.scenes, run.store))
    return feeder


def _task_groups(tiles: list, batch: int) -> list[list]:
    """Consecutive tiles of the same scene, ``batch`` at a time (plan order is kept)."""
    groups: list[list] = []
    for tile in tiles:
        if groups and len(groups[-1]) < batch and groups[-1][0].scene_index == tile.scene_index:
            groups[-1].append(tile)
        else:
            groups.append([tile])
    return groups


def _finish_clustering(clusterer: OnlineKMeans | None, run: _Run, opts: LabelOptions, quiet: bool):
    if clusterer is None:
        if not quiet:  # a flat or featureless scene: an empty (but valid) result beats an error
            print(f"geoalps: warning: no objects found in {', '.join(s.name for s in run.scenes)} "
                  "(try a smaller --min-area-px or a larger --max-area-frac)", file=sys.stderr)
        return None
    clusterer.finish()
    if clusterer.effective_classes < opts.classes and not clusterer.frozen and not quiet:
        print(f"geoalps: only {clusterer.effective_classes} distinct objects found, so "
              f"{clusterer.effective_classes} classes instead of {opts.classes}", file=sys.stderr)
    return clusterer


def _pass2(run: _Run, blocks, clusterer, seams: SeamIndex, quiet: bool, progress_lines: bool) -> list[Path]:
    """Classify, merge seams and write one layer per scene into the work folder."""
    from geoalps.labelling.assembly import LayerWriter, assemble_scene

    assembly = Progress(len(run.tiles), quiet, progress_lines, desc="assembling", start=90.0, span=5.0)
    scene_layers = []
    try:
        for index, (scene, plan) in enumerate(zip(run.scenes, run.plans)):
            layer_path = run.store.scratch(f"scene_{index}.gpkg")
            if layer_path.exists():  # pass 2 of an interrupted run is redone from scratch
                layer_path.unlink()
            writer = LayerWriter(layer_path, scene.crs_wkt)
            assemble_scene(scene, plan, lambda t: run.store.load(t.key), blocks, clusterer, writer,
                           seams.merged(index), on_tile=lambda: assembly.step("assembled"))
            writer.close()
            scene_layers.append(layer_path)
    finally:
        assembly.close()
    return scene_layers


def _emit(progress_lines: bool, percent: float, message: str) -> None:
    if progress_lines:
        print(f"geoalps-progress: {percent:.1f} {message}", file=sys.stderr, flush=True)


class _OrderedFeeder:
    """Feeds k-means with tile features strictly in plan order, whatever order tiles finish in,
    so the fitted model (and every class) is the same for 1 worker, N workers or a resumed run.
    Holds only the feature matrices of tiles that finished ahead of their turn."""

    def __init__(self, tiles, store: WorkStore, blocks, clusterer: OnlineKMeans | None, opts: LabelOptions, model_path):
        self.tiles, self.store, self.blocks = tiles, store, blocks
        self.clusterer, self.opts, self.model_path = clusterer, opts, model_path
        self.next = 0
        self.waiting: dict[str, TileResult] = {}
        self.skipped = 0
        self.engine_seconds = 0.0
        self.tile_seconds = 0.0
        self._checked = False

    def advance(self, done: set[str], fresh: dict[str, TileResult] | None = None) -> None:
        for key, result in (fresh or {}).items():
            self.waiting[key] = self._summary(result)  # features only: polygons are on disk
        while self.next < len(self.tiles) and self.tiles[self.next].key in done:
            key = self.tiles[self.next].key
            summary = self.waiting.pop(key, None) or self._summary(self.store.load(key))
            self._feed(*summary)
            self.next += 1

    def _summary(self, result: TileResult) -> tuple:
        widths = {b: result.features[b].shape[1] for b in self.blocks} if len(result) else {}
        features = result.feature_matrix(self.blocks) if len(result) else None
        return features, widths, result.skipped, result.engine_seconds, result.seconds

    def _feed(self, features, widths, skipped: bool, engine_seconds: float, seconds: float) -> None:
        self.skipped += int(skipped)
        self.engine_seconds += engine_seconds
        self.tile_seconds += seconds
        if features is None:
            return
        if self.clusterer is None:
            self.clusterer = OnlineKMeans(self.opts.classes, widths, seed=self.opts.seed)
        elif self.clusterer.frozen and not self._checked:
            self.clusterer.check_compatible(widths, str(self.model_path))
            self._checked = True
        self.clusterer.partial_fit(features)


def _failure_message(failures: list[tuple[Tile, TileFailure]], scenes: list[Scene], store: WorkStore) -> str:
    """One line: the first failed tile's scene, window and error, and how many failed."""
    tile, failure = failures[0]
    scene = scenes[tile.scene_index]
    message = failure.message
    if message.startswith(scene.path + ": "):
        message = message[len(scene.path) + 2:]
    where = f"tile {tile.key} (col {tile.col_off}, row {tile.row_off}, {tile.width} x {tile.height} px)"
    others = f"; {len(failures) - 1} more tile(s) failed" if len(failures) > 1 else ""
    kept = "" if store.temporary else f"; finished tiles are kept in {store.folder}, rerun with --resume after fixing the cause"
    return f"{scene.path}: {where} failed: {message}{others}{kept}"


def _materialise_arrays(scenes, cleanup: contextlib.ExitStack, allow_pixel_coords: bool) -> list:
    """rioxarray DataArrays become temporary tiled GeoTIFFs (written chunk by chunk when
    dask-backed), so tasks still carry only a path and a window."""
    items = [scenes] if isinstance(scenes, (str, os.PathLike)) or _is_dataarray(scenes) else list(scenes)
    out = []
    folder = None
    for number, item in enumerate(items):
        if not _is_dataarray(item):
            out.append(item)
            continue
        if folder is None:
            folder = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="geoalps-arrays-")))
        name = str(item.name) if item.name is not None else f"array_{number}"
        path = folder / f"{name}.tif"
        array = item if "band" in item.dims else item.expand_dims("band")
        if array.rio.crs is None and not allow_pixel_coords:
            raise GeoAlpsError(f"{name}: DataArray has no CRS or transform (set them with rioxarray's "
                               ".rio.write_crs / .rio.write_transform, or pass allow_pixel_coords)")
        array.rio.to_raster(path, tiled=True, blockxsize=256, blockysize=256, compress="deflate", windowed=True)
        out.append(str(path))
    return out


def _is_dataarray(item) -> bool:
    return type(item).__name__ == "DataArray" and hasattr(item, "rio")


def _write_outputs(scenes, scene_layers, output, raster_targets, n_classes, overwrite, kmeans_model, clusterer) -> dict:
    """All outputs appear together at the end, each renamed from a temporary file, or none."""
    from geoalps.labelling.assembly import LayerWriter, read_layer_batches
    from geoalps.outputs.vector import atomic_path, objects_in_layer, write_label_raster_to


    objects = 0
    classes_used: set[int] = set()
    with contextlib.ExitStack() as stack:
        for scene, layer, target in zip(scenes, scene_layers, raster_targets):
            if target is not None:
                tmp = stack.enter_context(atomic_path(target, overwrite))
                write_label_raster_to(tmp, scene, objects_in_layer(layer), n_classes)
        target_crs = scenes[0].crs_wkt
        tmp_out = stack.enter_context(atomic_path(output, overwrite)) if output is not None else None
        writer = LayerWriter(tmp_out, target_crs) if tmp_out is not None else None
        next_id = 1
        for scene, layer in zip(scenes, scene_layers):
            for batch in read_layer_batches(layer):
                if len(batch) and target_crs is not None and not _same_crs(batch.crs, target_crs):
                    batch = batch.to_crs(target_crs)
                classes_used.update(np.unique(batch["pseudo_class"]).tolist())
                objects += len(batch)
                if writer is not None and len(batch):
                    writer.add(_with_ids(batch, next_id))
                next_id += len(batch)
        if writer is not None:
            writer.close()
            from geoalps.outputs.style import write_qgis_style

            write_qgis_style(str(tmp_out), "masks", n_classes, field="pseudo_class")
        if kmeans_model is not None and clusterer is not None and not clusterer.frozen:
            clusterer.save(kmeans_model)
    from geoalps.outputs.style import write_qgis_raster_style

    for target in raster_targets:
        if target is not None:  # QGIS default style: only the K classes in the legend
            write_qgis_raster_style(target, n_classes)
    return {"objects": objects, "classes_used": len(classes_used), "n_classes": n_classes}


def _same_crs(a, b_wkt: str) -> bool:
    from pyproj import CRS

    return a is not None and CRS.from_user_input(a) == CRS.from_wkt(b_wkt)


def _with_ids(batch, first_id: int):
    import warnings

    batch = batch.copy()
    batch.insert(0, "instance_id", np.arange(first_id, first_id + len(batch), dtype=np.int64))
    with warnings.catch_warnings():  # geographic CRSs: area in degrees squared, as documented
        warnings.simplefilter("ignore", UserWarning)
        batch.insert(4, "area", batch.geometry.area.round(6))
    return batch


def _read_output(output):
    import pyogrio

    return pyogrio.read_dataframe(output, layer="masks")


def _read_all(scene_layers, scenes):
    """The whole result as one GeoDataFrame, as the output file holds it (API convenience)."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    from geoalps.labelling.assembly import empty_frame

    target_crs = scenes[0].crs_wkt
    frames = []
    for layer in scene_layers:
        frame = pyogrio.read_dataframe(layer, layer="masks")
        if len(frame) and target_crs is not None and not _same_crs(frame.crs, target_crs):
            frame = frame.to_crs(target_crs)
        frames.append(frame)
    frames = [f for f in frames if len(f)] or [empty_frame(target_crs)]
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=target_crs)
    return _with_ids(gdf, 1)
