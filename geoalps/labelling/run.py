"""``label``: scenes in, pseudo-classed polygons (and label rasters) out. The only module that
knows the whole path of the data:

    inputs     open and check scenes, plan tiles (geoalps.inputs)
    pass 1     per tile (tile_work.py), in this process or on dask workers (parallel.py): masks ->
               features -> polygons, each result saved to the work store as it arrives; seam
               decisions as tiles finish (geoalps.objects.seams); k-means partial_fit on the
               features in plan order (geoalps.clustering), so the result does not depend on the
               worker count
    pass 2     streaming (assembly.py): classify from stored features, merge seam fragments; the
               frames go straight into the one output writer and each scene's label raster is
               burnt from them (geoalps.outputs)

Two passes because an object's class is only known once k-means has seen all objects. Storing
tile results makes pass 2 cheap, ``--resume`` natural and memory flat.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from geoalps.labelling.feeder import OrderedFeeder
from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.errors import InputError, OutputError, TileError
from geoalps.files import atomic_path, check_distinct, check_writable, remove_stale_temporaries
from geoalps.inputs.bands import band_names_hint, resolve_bands
from geoalps.inputs.aoi import load_aoi
from geoalps.inputs.crs import same_crs
from geoalps.inputs.remote import is_virtual, redact
from geoalps.inputs.scene import Scene, open_scene
from geoalps.inputs.sources import materialise_arrays, scene_sources
from geoalps.inputs.tiles import Tile, plan_tiles
from geoalps.labelling.assembly import assemble_scene
from geoalps.labelling.lock import run_lock
from geoalps.labelling.parallel import TileFailure, TileRunner
from geoalps.labelling.tile_work import TileTask, check_engine, process_tiles
from geoalps.labelling.work_store import WorkStore, fingerprint, settings_digest
from geoalps.objects.features import UNKNOWN_ROLE_INDICES, feature_blocks
from geoalps.objects.seams import SeamIndex
from geoalps.objects.coverage import tolerance_px
from geoalps.options import LabelOptions, RunOptions, auto_workers, parse_simplify, split_options
from geoalps.outputs.raster import (LABEL_RASTER_SUFFIX, burn_objects, label_raster_stem, objects_in_memory, open_label_raster,
                                    write_raster_style)
from geoalps.outputs.style import output_class_colours
from geoalps.outputs.formats import (check_output, check_raster_output, output_files, output_format,
                                     raster_output_files)
from geoalps.outputs.vector import (BAND_ROLES_METADATA, ENGINE_METADATA, SCENES_METADATA, LayerStyle, LayerWriter,
                                    objects_frame, objects_in_layer, write_output)
from geoalps.progress import Progress, emit_line


@dataclass
class LabelResult:
    """What :func:`label` gives back, whatever was asked for.

    ``stats``: the run's figures (objects, classes, tiles, seconds, engine, workers, ...).
    ``output`` / ``raster_outputs``: the files written. ``gdf``: the objects as one GeoDataFrame,
    read from ``output`` on first use (the CLI never loads it; without an output file it was kept
    in memory). ``labels``: the label raster(s) as rioxarray DataArray(s), with ``return_labels``.
    """

    stats: dict
    output: Path | None = None
    raster_outputs: list[Path] = field(default_factory=list)
    labels: object = None
    _gdf: object = None

    @property
    def gdf(self):
        if self._gdf is None and self.output is not None:
            from geoalps.outputs.vector import read_layer

            self._gdf = read_layer(self.output)
            self._gdf.attrs["geoalps"] = self.stats
        return self._gdf


def label(
    scenes,
    output: str | os.PathLike | None = None,
    *,
    raster_out: str | os.PathLike | None = None,
    kmeans_model: str | os.PathLike | None = None,
    trust_kmeans_model: bool | None = None,
    settings: LabelOptions | None = None,
    run: RunOptions | None = None,
    return_labels: bool = False,
    **options,
) -> LabelResult:
    """Label scenes into pseudo-classed polygons (layer ``masks``) and optionally label rasters.

    Args:
        scenes: raster paths, folders of image chips, URLs or GDAL virtual paths (``https://``,
            ``s3://``, ``gs://``, ``az://``, ``/vsicurl/``, ``/vsizip/``), STAC item or item
            collection files/URLs (``assets=`` picks their bands), or rioxarray DataArrays (with
            CRS and transform; dask-backed is fine); several scenes are clustered together so a
            pseudo-class means the same thing in all of them. ``aoi=`` / ``aoi_crs=`` limit every
            scene to an area of interest (see :mod:`geoalps.inputs.aoi`).
        output: polygons to write, in the format of its extension (.gpkg, .parquet, .fgb, .geojson,
            .json, .shp: :mod:`geoalps.outputs.formats`); None to keep the objects in memory only.
        raster_out: pseudo-label GeoTIFF on the scene's grid, or a folder (``<scene>.labels.tif``
            each) when there are several scenes.
        kmeans_model: saved k-means; reused (frozen) when the file exists, else fitted and saved.
        trust_kmeans_model: also read a k-means model of older geoalps (a pickle, which runs code
            when read: only for files you trust); None: the ``GEOALPS_TRUST_KMEANS_MODEL`` variable.
        settings / run: the two option records (:class:`~geoalps.options.LabelOptions`,
            :class:`~geoalps.options.RunOptions`); or give their fields as keywords
            (``engine="sam"``, ``classes=12``, ``band_names="blue,green,red,nir"``, ``workers=2``,
            ``resume=True``, ...). Keywords given with a record apply on top of it
            (``settings=LabelOptions(classes=3), classes=6`` makes 6 classes).
        return_labels: also load the label raster(s) into ``result.labels`` (DataArrays).

    Scenes in different CRSs are reprojected to the first scene's CRS in the output layer; each
    label raster stays on its own scene's grid. Memory: per worker one tile's pixels and masks;
    in this process the k-means, the seam candidates of finished tiles whose neighbours are still
    running, the fragments of merged objects (with a disjoint engine, all objects near seams of
    the scene being assembled: :mod:`geoalps.objects.coverage`) and one batch of polygons (with a
    label raster, the polygons of the scene being assembled; without an output file, all of them).
    """
    started = time.perf_counter()
    given_settings, given_run = split_options(options, settings, run)
    from geoalps.engines import resolve_engine

    # The engine is decided here, once: the options every worker gets name it (and its checkpoint).
    opts = resolve_engine(given_settings.validated())
    exe = given_run.validated()
    with contextlib.ExitStack() as cleanup:
        state = _prepare(scenes, output, raster_out, kmeans_model, return_labels, opts, exe, cleanup,
                         trust_kmeans_model)
        try:
            pending = sum(t.key not in state.done for t in state.tiles)
            with TileRunner(auto_workers(exe.workers, opts.engine, pending), exe.scheduler) as runner:
                description, blocks, batch = _start_engine(runner, state, opts, exe,
                                                           auto=given_settings.engine == "auto")
                seams = SeamIndex(state.plans, [Affine.identity()] * len(state.scenes))  # tile results are in scene pixels
                feeder = _pass1(runner, state, opts, exe, blocks, batch, seams)
            clusterer = _finish_clustering(feeder.clusterer, state, opts, exe.quiet)
            n_classes = max(clusterer.effective_classes if clusterer is not None else 0, opts.classes)
            stats, gdf = _pass2(state, blocks, clusterer, seams, exe, opts, output, n_classes, description)
        except BaseException:
            if not state.store.temporary and not state.store.finished():
                state.store.remove()  # nothing to resume: no work folder to block the next run
            raise
        if not exe.keep_work or state.store.temporary:
            state.store.remove()
        wall = time.perf_counter() - started
        stats.update({
            "engine": description, "tiles": len(state.tiles), "tiles_skipped": feeder.skipped,
            "tiles_resumed": state.resumed, "seconds": wall, "engine_seconds": feeder.engine_seconds,
            "tile_seconds": feeder.tile_seconds,
            "tiles_per_second": (len(state.tiles) - state.resumed) / wall if wall else 0.0,
            "workers": runner.workers if runner.distributed else 1,
        })
        if exe.progress_lines:
            emit_line(100.0, f"done: {stats['objects']} objects")
        labels = None
        if return_labels:
            import rioxarray

            arrays = [rioxarray.open_rasterio(t).squeeze("band", drop=True).load() for t in state.raster_targets]
            labels = arrays[0] if len(arrays) == 1 else arrays
        if gdf is not None:
            gdf.attrs["geoalps"] = stats
        kept = [Path(t) for t in state.raster_targets if t is not None] if raster_out is not None else []
        return LabelResult(stats, Path(output) if output is not None else None, kept, labels, gdf)


def _raster_out_is_folder(raster_out: str | os.PathLike) -> bool:
    return Path(raster_out).is_dir() or str(raster_out).endswith(os.sep)


def _raster_targets(raster_out: str | os.PathLike | None, scenes: list[Scene]) -> list[Path | None]:
    if raster_out is None:
        return [None] * len(scenes)
    as_folder = _raster_out_is_folder(raster_out) or len(scenes) > 1
    raster_out = Path(raster_out)
    if not as_folder:
        return [check_raster_output(raster_out)]
    if not raster_out.is_dir():
        raise OutputError(f"{raster_out}: --raster-out must be an existing folder when labelling several scenes")
    targets = [raster_out / f"{label_raster_stem(s.name)}{LABEL_RASTER_SUFFIX}" for s in scenes]
    if len(set(targets)) != len(targets):
        raise OutputError(f"{raster_out}: several scenes share a file name, so their label rasters would collide")
    return targets


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


def _prepare(scenes, output, raster_out, kmeans_model, return_labels, opts: LabelOptions, exe: RunOptions,
             cleanup: contextlib.ExitStack, trust_kmeans_model: bool | None = None) -> _Run:
    """Open and check every input and output before any tile work, so bad input fails in seconds."""
    overwrite, work_dir = exe.overwrite, exe.work_dir
    if output is not None:
        output_format(output)  # an unknown extension fails before the scenes are even opened
    if kmeans_model is not None and not Path(kmeans_model).exists():
        check_writable(kmeans_model, overwrite=False)  # a missing folder fails now, not after every tile
    sources = scene_sources(materialise_arrays(scenes, cleanup, opts.allow_pixel_coords), opts.assets)
    aoi = load_aoi(opts.aoi, opts.aoi_crs)
    opened = [open_scene(s.path, nodata=opts.nodata, allow_pixel_coords=opts.allow_pixel_coords, aoi=aoi,
                         name=s.name, shown=s.shown, band_names=opts.band_names) for s in sources]
    opened = [dataclasses.replace(s, name=n) if n != s.name else s for s, n in zip(opened, unique_scene_names(opened))]
    if len({s.georeferenced for s in opened}) > 1:
        raise InputError(
            f"{next(s.shown for s in opened if not s.georeferenced)}: has no georeferencing while "
            "other scenes do; label pixel-coordinate chips in a separate run"
        )
    band_maps = [resolve_bands(opts.bands, s.count, s.shown, s.band_roles) for s in opened]
    for scene in opened:  # a tolerance in metres on a CRS in degrees fails here, not after the tiles
        _simplify_px(opts, scene)
    # Spectral features use every band; if scenes differ in band count, only the mapped three
    # are comparable across scenes.
    same_bands = len({s.count for s in opened}) == 1
    if return_labels and raster_out is None:
        raster_out = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="geoalps-labels-"))
    raster_targets = _raster_targets(raster_out, opened)
    if output is not None:  # format by extension, sidecars free, none shared with a label raster
        check_output(output, overwrite, others=tuple(raster_targets))
    for target in raster_targets:
        if target is not None:
            check_writable(target, overwrite)
    model_exists = kmeans_model is not None and Path(kmeans_model).exists()
    check_distinct(
        [s.path for s in opened] + [opts.aoi, kmeans_model if model_exists else None],
        ([(str(output), output_files(output))] if output is not None else [])
        + [(str(t), raster_output_files(t)) for t in raster_targets if t is not None]
        + ([(str(kmeans_model), [kmeans_model])] if kmeans_model is not None and not model_exists else []))
    clusterer = OnlineKMeans.load(kmeans_model, trust=trust_kmeans_model) if model_exists else None
    if clusterer is not None and clusterer.n_classes != opts.classes:  # said even with --quiet
        print(f"geoalps: warning: {kmeans_model} has {clusterer.n_classes} classes; they are used, "
              f"not --classes {opts.classes}", file=sys.stderr)
    plans = [plan_tiles(s.width, s.height, opts.tile_size_px, opts.overlap_px, i) for i, s in enumerate(opened)]
    tiles = [t for plan in plans for t in plan]
    settings = {**opts.as_dict(), "aoi": redact(opts.aoi) if opts.aoi else None,
                "aoi_resolved": aoi.fingerprint() if aoi is not None else None,
                "bands_resolved": [list(b) for b in band_maps],
                "band_roles_resolved": [list(s.band_roles.names) for s in opened],
                "unknown_role_indices": UNKNOWN_ROLE_INDICES,
                "kmeans_model": str(kmeans_model) if clusterer is not None else None}
    if work_dir is None and output is not None:
        work_dir = f"{output}.geoalps-work"
    # one run at a time on this output and work folder, from here to the end of the run
    cleanup.enter_context(run_lock(*[p for p in (output, work_dir) if p is not None]))
    for written in [output, *raster_targets, kmeans_model]:
        if written is not None:  # temporaries of a run killed during its final write
            remove_stale_temporaries(written)
    # runs without a work folder cannot resume: no HEAD requests for them
    prints = fingerprint(opened, settings, remote_versions=work_dir is not None)
    store = WorkStore.open(work_dir, prints, resume=exe.resume, overwrite=overwrite)
    if store.temporary:
        cleanup.callback(store.remove)
    done = store.finished() & {t.key for t in tiles}
    return _Run(opened, band_maps, [None if same_bands else bm for bm in band_maps], raster_targets, clusterer,
                plans, tiles, settings, store, done, len(done), kmeans_model)


def _start_engine(runner: TileRunner, run: _Run, opts: LabelOptions, exe: RunOptions,
                  auto: bool = False) -> tuple[str, tuple, int]:
    """Load the engine ``opts`` name in every worker (or here) and say which one runs, on stderr
    (``auto``: it was chosen for ``--engine auto``)."""
    description, has_embedding, batch = runner.on_every_worker(check_engine, opts, exe.tile_batch)
    scheduler = exe.scheduler
    if not exe.quiet:
        reason = " (no SAM checkpoint found)" if auto and opts.engine == "classical" else ""
        where = f", cluster {redact(scheduler)}" if scheduler else (f", {runner.workers} workers" if runner.distributed else "")
        resumed = f", resuming: {run.resumed} of {len(run.tiles)} tiles already done" if run.resumed else ""
        batched = f", {batch} tiles per engine call" if batch > 1 else ""
        print(f"geoalps: engine {description}{reason}{where}{batched}{resumed}", file=sys.stderr)
    model_blocks = tuple(run.clusterer.block_widths) if run.clusterer is not None else None
    blocks = feature_blocks(opts.features, has_embedding, model_blocks)
    if not exe.quiet:
        _warn_unknown_bands(run)
    return description, blocks, batch


def _warn_unknown_bands(run: _Run) -> None:
    """One warning a run (not a tile) when a scene's band roles are unknown and nobody named
    them: the engine's view is then a guess and the index features are zero."""
    unknown = [(s, view) for s, view in zip(run.scenes, run.band_maps)
               if s.count > 1 and not s.band_roles.known and s.band_roles.source != "--band-names"]
    if unknown:
        scene, view = unknown[0]
        more = f" ({len(unknown) - 1} more scene(s) alike)" if len(unknown) > 1 else ""
        print(f"geoalps: warning: {band_names_hint(scene.shown, scene.count, view)}{more}", file=sys.stderr)


def _pass1(runner: TileRunner, run: _Run, opts: LabelOptions, exe: RunOptions, blocks, batch: int,
           seams: SeamIndex) -> OrderedFeeder:
    """Every tile not yet in the work store, in any order; k-means is fed strictly in plan order
    and seam decisions are made as tiles finish (``seams``).

    A task is ``batch`` neighbouring tiles of one scene (engines that batch, SAM on a GPU) or one
    tile. A tile that keeps failing does not stop the others: all failures are reported together
    at the end, and the finished tiles stay in the work store for ``--resume``.
    """
    done = set(run.done)
    groups = _task_groups([t for t in run.tiles if t.key not in done], batch)
    tasks = [TileTask(run.scenes[g[0].scene_index], tuple(g), opts, run.band_maps[g[0].scene_index], blocks,
                      run.spectral_bands[g[0].scene_index], exe.tile_batch) for g in groups]
    digest = settings_digest(run.settings)
    keys = [f"geoalps-{digest}-{g[0].key}" + (f"+{len(g) - 1}" if len(g) > 1 else "") for g in groups]
    progress = Progress(len(run.tiles), "labelling", unit="tile", lines=exe.progress_lines, enabled=not exe.quiet,
                        done=len(done), span_pct=90.0)
    feeder = OrderedFeeder(run.tiles, run.store.load, blocks, run.clusterer, opts, run.kmeans_model)
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
                    progress.update(1, f"tile {progress.count + 1}/{progress.total} {name} {tile.key}: FAILED")
                    continue
                result = results[position]
                _save_tile(run.store, tile.key, result)
                done.add(tile.key)
                feeder.advance(done, fresh={tile.key: result})
                seams.add(tile, result)
                progress.update(1, f"tile {progress.count + 1}/{progress.total} {name} {tile.key}: {len(result)} objects")
    except KeyboardInterrupt:
        progress.close()
        if not run.store.temporary and done:  # else the folder is removed: nothing to resume
            print(f"geoalps: interrupted; finished tiles are kept in {run.store.folder}; "
                  "rerun the same command with --resume to continue", file=sys.stderr)
        raise
    finally:
        progress.close()
    if failures:
        raise TileError(_failure_message(failures, run.scenes, run.store))
    return feeder


def _save_tile(store: WorkStore, key: str, result) -> None:
    try:
        store.save(key, result)
    except OSError as exc:  # disk full, quota, a file size limit
        raise OutputError(f"{store.folder}: cannot save a tile result ({exc.strerror or exc}); the tiles "
                          "saved before are kept: free space and rerun with --resume") from None


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
    # Warnings about the result are said even with --quiet (which hides progress, not problems).
    if clusterer is None:  # a flat or featureless scene: an empty (but valid) result beats an error
        print(f"geoalps: warning: no objects found in {', '.join(s.name for s in run.scenes)} "
              "(try a smaller --min-area-px or a larger --max-area-frac)", file=sys.stderr)
        return None
    clusterer.finish()
    if clusterer.effective_classes < opts.classes and not clusterer.frozen:
        print(f"geoalps: only {clusterer.effective_classes} distinct objects found, so "
              f"{clusterer.effective_classes} classes instead of {opts.classes}", file=sys.stderr)
    return clusterer


def _pass2(run: _Run, blocks, clusterer, seams: SeamIndex, exe: RunOptions, opts: LabelOptions, output,
           n_classes: int, engine: str) -> tuple[dict, object]:
    """Classify, merge seams (``--simplify`` applied in each scene's pixels) and stream every
    scene's objects straight into the one output writer, reprojected to the first scene's CRS as
    they pass; each scene's label raster is burnt, on its own grid, from its frames before they
    are reprojected. No scratch files, even for scenes in several CRSs, except a scene with more
    than :data:`RASTER_OBJECTS_IN_MEMORY` objects and a label raster (:class:`_SceneObjects`).
    Without an output file the
    frames are kept as one GeoDataFrame (returned; else None). The output's metadata records the
    scenes, their band roles and the engine that ran (``engine``: its description).

    All outputs appear together at the end, each renamed from a temporary file, or none. A write
    that fails for want of space (or of a file size limit, or a folder that cannot be written) is
    an :class:`OutputError` naming the output; the work folder stays for ``--resume``. Memory: one
    batch of objects, plus up to :data:`RASTER_OBJECTS_IN_MEMORY` of one scene's polygons and
    class ids while it has a label raster.
    """
    style = _output_classes(n_classes, clusterer)
    colours = output_class_colours(style.n_classes, style.first_pseudo_classes)
    target_crs = run.scenes[0].crs_wkt
    classes_used: set[int] = set()
    objects = 0
    assembly = Progress(len(run.tiles), "assembling", unit="tile", lines=exe.progress_lines, enabled=not exe.quiet,
                        start_pct=90.0, span_pct=5.0)

    def frames(rasters: contextlib.ExitStack):
        nonlocal objects
        for index, (scene, plan, target) in enumerate(zip(run.scenes, run.plans, run.raster_targets)):
            burnt = _SceneObjects(run.store, index, style.field, scene.crs_wkt) if target is not None else None
            for frame in assemble_scene(scene, plan, lambda t: run.store.load(t.key), blocks, clusterer,
                                        seams.merged(index), simplify_px=_simplify_px(opts, scene),
                                        on_tile=lambda: assembly.update(1, f"tile {assembly.count + 1}/{assembly.total} assembled")):
                if burnt is not None:
                    burnt.add(frame)
                if target_crs is not None and not same_crs(frame.crs, target_crs):
                    frame = frame.to_crs(target_crs)
                classes_used.update(np.unique(frame["pseudo_class"]).tolist())
                objects += len(frame)
                yield frame
            if target is not None:
                _write_label_raster(rasters.enter_context(atomic_path(target, exe.overwrite)), scene, burnt, style,
                                    colours)
        assembly.close()
        if exe.progress_lines:
            emit_line(95.0, "writing outputs")

    gdf = None
    try:
        with _writing(output or run.raster_targets[0], run.store), contextlib.ExitStack() as rasters:
            if output is not None:
                write_output(frames(rasters), output, target_crs, overwrite=exe.overwrite, style=style,
                             metadata=_output_metadata(run.scenes, opts, engine))
            else:
                gdf = objects_frame(list(frames(rasters)), target_crs)
            if run.kmeans_model is not None and clusterer is not None and not clusterer.frozen:
                clusterer.save(run.kmeans_model)
    finally:
        assembly.close()
    for target in run.raster_targets:
        if target is not None:  # QGIS default style: only the K classes in the legend
            write_raster_style(target, style.n_classes, style.class_names, colours)
    return {"objects": objects, "classes_used": len(classes_used), "n_classes": n_classes}, gdf


def _output_metadata(scenes: list[Scene], opts: LabelOptions, engine: str) -> dict[str, str]:
    """The output layer's metadata items: where the scenes are, their band roles, the engine."""
    return {SCENES_METADATA: json.dumps(_scene_paths(scenes)),
            BAND_ROLES_METADATA: json.dumps({s.name: list(s.band_roles.names) for s in scenes}),
            ENGINE_METADATA: json.dumps({"engine": opts.engine, "model_type": opts.model_type,
                                         "checkpoint": opts.checkpoint, "description": engine})}


#: A scene's objects are held in memory for its label raster up to this many (an STRtree: fast);
#: past it they spill to a scratch GeoPackage in the work folder and are burnt through its spatial
#: index, so memory stays bounded for scenes of any size (about 1 KB an object in memory).
RASTER_OBJECTS_IN_MEMORY = 250_000


class _SceneObjects:
    """One scene's objects (geometry and class id, in the scene's CRS) for its label raster: in
    memory while they are few, in a scratch GeoPackage (``raster_objects_<i>.gpkg`` in the work
    folder, the one scratch file pass 2 keeps) once they pass :data:`RASTER_OBJECTS_IN_MEMORY`."""

    def __init__(self, store: WorkStore, index: int, field: str, crs_wkt: str | None) -> None:
        self.field, self.crs_wkt = field, crs_wkt
        self.path = store.folder / f"raster_objects_{index}.gpkg"
        self.parts: list = []
        self.count = 0
        self.writer: LayerWriter | None = None

    def add(self, frame) -> None:
        part = frame[[self.field, "geometry"]]
        self.count += len(part)
        if self.writer is None and self.count > RASTER_OBJECTS_IN_MEMORY:
            self.path.unlink(missing_ok=True)  # left by an interrupted run: pass 2 is redone
            self.writer = LayerWriter(self.path, self.crs_wkt)
            for held in self.parts:
                self.writer.add(held)
            self.parts = []
        if self.writer is not None:
            self.writer.add(part)
        else:
            self.parts.append(part)

    def query(self):
        """The block query :func:`geoalps.outputs.raster.burn_objects` reads the objects through."""
        if self.writer is not None:
            self.writer.close()
            return objects_in_layer(self.path, field=self.field)
        geometries = np.concatenate([p.geometry.values for p in self.parts]) if self.parts else np.zeros(0, object)
        classes = np.concatenate([p[self.field].to_numpy() for p in self.parts]) if self.parts else np.zeros(0, np.int32)
        return objects_in_memory(geometries, classes)


def _write_label_raster(path: Path, scene: Scene, burnt: _SceneObjects, style: LayerStyle, colours) -> None:
    """One scene's label raster from its objects (in the scene's CRS), smallest object on top
    (:func:`geoalps.outputs.raster.burn_objects`)."""
    with open_label_raster(path, scene, style.n_classes, what=style.field, class_names=style.class_names,
                           colours=colours) as dst:
        burn_objects(dst, scene, burnt.query(), style.n_classes)
        dst.update_tags(**{BAND_ROLES_METADATA: json.dumps(list(scene.band_roles.names))})


def _simplify_px(opts: LabelOptions, scene: Scene) -> float:
    """``--simplify`` in the scene's pixels (0: off)."""
    if opts.simplify is None:
        return 0.0
    return tolerance_px(*parse_simplify(opts.simplify), scene.transform, scene.crs_wkt, scene.path)


def _failure_message(failures: list[tuple[Tile, TileFailure]], scenes: list[Scene], store: WorkStore) -> str:
    """One line: the first failed tile's scene, window and error, and how many failed."""
    tile, failure = failures[0]
    scene = scenes[tile.scene_index]
    message = failure.message
    if message.startswith(scene.shown + ": "):
        message = message[len(scene.shown) + 2:]
    where = f"tile {tile.key} (col {tile.col_off}, row {tile.row_off}, {tile.width} x {tile.height} px)"
    others = f"; {len(failures) - 1} more tile(s) failed" if len(failures) > 1 else ""
    kept = "" if store.temporary or not store.finished() else \
        f"; finished tiles are kept in {store.folder}, rerun with --resume after fixing the cause"
    return f"{scene.shown}: {where} failed: {redact(message)}{others}{kept}"


def _output_classes(n_classes: int, clusterer) -> LayerStyle:
    """The field, number of classes, names and colours the outputs are coloured and burnt by: the
    pseudo-classes, or the named classes of a named k-means model (several pseudo-classes may
    share a name; each named class has the colour of its first pseudo-class)."""
    names = clusterer.class_names if clusterer is not None else None
    if names is None:
        return LayerStyle(n_classes, "pseudo_class")
    merged = names.merged_names
    return LayerStyle(len(merged), "class_id", merged, tuple(names.first_pseudo_classes()))


@contextlib.contextmanager
def _writing(what, store: WorkStore):
    """Failures to write ``what`` (the disk full, a file size limit, a folder that went away)
    as one :class:`OutputError` naming it, with how to go on."""
    try:
        yield
    except _write_failures() as exc:
        kept = "" if store.temporary else f"; the finished tiles are kept in {store.folder}: rerun with --resume"
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise OutputError(f"{what}: writing failed ({redact(reason)}; disk full or not writable?){kept}") from None


def _write_failures() -> tuple[type[BaseException], ...]:
    """What GDAL, SQLite and the OS raise when a file cannot be written to the end."""
    import sqlite3

    import pyogrio.errors
    import rasterio.errors

    return (OSError, sqlite3.Error, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError,
            pyogrio.errors.FieldError, rasterio.errors.RasterioError)


def unique_scene_names(scenes: list[Scene]) -> list[str]:
    """The ``scene`` value of each scene: its name, or for scenes sharing a file name
    (``a/scene.tif``, ``b/scene.tif``) the shortest end of their paths that tells them apart, so
    every key of the output's scene map (:func:`_scene_paths`) is one file."""
    names = [s.name for s in scenes]
    for name in set(names):
        group = [i for i, n in enumerate(names) if n == name]
        if len(group) < 2:
            continue
        parts = [_location_parts(scenes[i]) for i in group]
        for depth in range(2, max(len(p) for p in parts) + 1):
            tails = ["/".join(p[-depth:]) for p in parts]
            if len(set(tails)) == len(tails):
                break
        for i, tail in zip(group, tails):
            names[i] = tail
    return names


def _location_parts(scene: Scene) -> list[str]:
    where = Path(os.path.abspath(scene.path)).as_posix() if os.path.isfile(scene.path) else scene.shown
    return [p for p in where.split("/") if p][:-1] + [scene.name]


def _scene_paths(scenes: list[Scene]) -> dict[str, str]:
    """Scene name -> absolute path (or URL, redacted) of every scene, kept in the output so later
    commands (the class gallery) find the scenes where they were."""
    return {s.name: s.shown if is_virtual(s.path) else os.path.abspath(s.path)
            for s in scenes}
