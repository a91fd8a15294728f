"""Apply a trained model to a scene: overlapping tiles, blended class scores, a raster on the scene grid.

Tiles are the pixel windows of :func:`geoalps.inputs.tiles.plan_tiles` (``stride = tile -
overlap``) on the scene's own grid (the scene is read as it is, never warped), so every tile is
whole pixels of the scene.
Each tile's softmax scores are weighted by a ramp that falls towards the tile edge and summed per
pixel; the class is the arg-max of the sum, which removes seams where neighbouring tiles disagree.
The output has the scene's CRS, transform and size, class ids 0..K-1, nodata 255 (65535 beyond
255 classes) on the scene's nodata pixels, a colour table and the class-raster tags of
:mod:`geoalps.outputs.raster` (the one label-raster writer); ``--polygons`` vectorizes it into
the ``masks`` layer of :mod:`geoalps.outputs.vector` (the one GeoPackage writer).
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from geoalps.errors import InputError, ModelError, OptionError
from geoalps.files import atomic_path, check_writable
from geoalps.inputs.scene import Scene
from geoalps.options import check_tiling

#: What runs the network: torch on a .pt checkpoint, or onnxruntime on an exported .onnx model.
BACKENDS = ("torch", "onnx")
#: Score accumulators larger than this go to a memory-mapped temp file beside the output.
IN_MEMORY_LIMIT_BYTES = 1 << 30


def tile_weights(tile_px: int, overlap_px: int) -> np.ndarray:
    """(tile, tile) blending weights: 1 in the middle, a linear ramp over ``overlap_px`` at the edges."""
    ramp = np.ones(tile_px, dtype=np.float32)
    if overlap_px > 0:
        edge = np.minimum(np.arange(tile_px) + 0.5, tile_px - np.arange(tile_px) - 0.5)
        ramp = np.clip(edge / overlap_px, 0.05, 1.0).astype(np.float32)
    return np.outer(ramp, ramp)


def prediction_windows(width: int, height: int, tile_px: int, overlap_px: int) -> list[tuple[int, int]]:
    """(col_off, row_off) of the ``tile_px`` square windows covering a scene, row-major.

    The tiles of :func:`geoalps.inputs.tiles.plan_tiles` (the one tile rule, what labelling and
    validation use): starts every ``tile - overlap`` pixels, the last row and column shifted back
    to end at the scene edge; a scene smaller than a tile is one window at (0, 0) that reads past
    its edge (filled, and dropped again when scores are added)."""
    from geoalps.inputs.tiles import plan_tiles

    return [(t.col_off, t.row_off) for t in plan_tiles(width, height, tile_px, overlap_px)]


def _read_batches(scene: Scene, windows: list[tuple[int, int]], tile_px: int,
                  batch_size: int) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
    """Batches of (windows, float32 (B, C, tile, tile) pixels) read from the scene on its own
    grid (nothing is resampled); outside the scene reads as its nodata (else 0)."""
    parts = [windows[start : start + batch_size] for start in range(0, len(windows), batch_size)]
    yield from _read_parts(scene, parts, tile_px)


def _read_parts(scene: Scene, parts: list[list[tuple[int, int]]],
                tile_px: int) -> Iterator[tuple[list[tuple[int, int]], np.ndarray | None]]:
    """(windows, pixels) for each list of windows in ``parts``; an empty part gives None pixels."""
    fill = scene.nodata if scene.nodata is not None and np.isfinite(scene.nodata) else 0
    for part in parts:
        if not part:
            yield part, None
            continue
        yield part, np.stack([read_tile(scene, col, row, tile_px, fill) for col, row in part])


def read_tile(scene: Scene, col: int, row: int, tile_px: int, fill: float) -> np.ndarray:
    """float32 (C, tile, tile) pixels of the square window at (col, row) of the scene's grid,
    ``fill`` where the window runs past the scene (a scene smaller than a tile).

    Reads through :func:`geoalps.inputs.scene.read_window` (the one door: GDAL settings,
    retries, one-line errors; boundless, which costs a warped view only past the edge)."""
    from rasterio.windows import Window

    from geoalps.inputs.scene import read_window

    return read_window(scene, Window(col, row, tile_px, tile_px), boundless=True, fill_value=fill).astype(np.float32)


def _rank_parts(windows: list[tuple[int, int]], batch_size: int, ranks: Any) -> list[list[tuple[int, int]]]:
    """This process's batches: in each round of ``world_size`` x ``batch_size`` windows, rank r
    takes the r-th ``batch_size`` (possibly none in the last round), so gathering a round in rank
    order gives the windows in their one-process order."""
    world, rank = ranks.world_size, ranks.rank
    step = batch_size * world
    return [windows[start + rank * batch_size : start + (rank + 1) * batch_size] for start in range(0, len(windows), step)]


def normalise(images: np.ndarray, mean: list[float], std: list[float],
              nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of ``geoalps.train.data.BatchPrep`` for images: ((x - mean) / std) with
    nodata pixels (every band equal to ``nodata``) zeroed; returns (x, valid (B, H, W))."""
    if nodata is not None:
        valid = (images != nodata).any(axis=1)
    else:
        valid = np.ones((images.shape[0], *images.shape[2:]), dtype=bool)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (((images - m) / s) * valid[:, None]).astype(np.float32), valid


def predict_classes(
    network: Callable[[Any], Any],
    scene_path: str | os.PathLike | Scene,
    tile_px: int,
    n_classes: int,
    mean: list[float],
    std: list[float],
    overlap_px: int | None = None,
    batch_size: int = 8,
    device: Any = "cpu",
    nodata: float | None = None,
    progress: Any = None,
    scratch_dir: str | os.PathLike | None = None,
    progress_reserve: float = 0.0,
    backend: str = "torch",
    ranks: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``network`` scores over a scene; return (classes (H, W) int64, valid (H, W) bool).

    Args:
        network: ``backend="torch"``: maps a normalised (B, C, tile, tile) tensor on ``device``
            to (B, K, tile, tile) logits; ``"onnx"``: maps a normalised float32 numpy batch to
            (B, K, tile, tile) class probabilities (the exported graph ends in a softmax).
        scene_path: the scene raster (or its :class:`~geoalps.inputs.scene.Scene`, opened once).
        tile_px: network input size.
        n_classes: K.
        mean, std: band normalisation of the model.
        overlap_px: tile overlap (default tile/4; stride = tile - overlap).
        batch_size: tiles per forward pass.
        device: torch device for the network input (torch backend).
        nodata: the scene's nodata value (pixels where every band equals it are invalid).
        progress: a ``Progress`` counted in tiles.
        scratch_dir: where a large score accumulator is memory-mapped.
        progress_reserve: share of the progress bar left to the caller's later steps (writing).
        backend: "torch" or "onnx" (no torch import at all).
        ranks: a data-parallel run's :class:`~geoalps.train.distributed.Ranks`: each process
            scores its share of the windows; the first gathers them and adds them in the
            one-process order (so the output is the same), the others return (None, None).

    Cost: one forward pass per tile, (tile / stride)^2 tiles per tile area (1.8x at overlap
    tile/4); memory K x H x W float32 for the scores (memory-mapped beyond 1 GiB) plus one bool
    and one int64 array of H x W.
    """
    from geoalps.train.data import open_north_up

    scene = scene_path if isinstance(scene_path, Scene) else open_north_up(scene_path)
    overlap_px = tile_px // 4 if overlap_px is None else int(overlap_px)
    check_tiling(tile_px, overlap_px)  # the one tile rule: overlap 0..tile/2
    windows = prediction_windows(scene.width, scene.height, tile_px, overlap_px)
    if progress is not None:
        progress.set_total(math.ceil(max(len(windows), 1) / (1 - progress_reserve)))
    weights = tile_weights(tile_px, overlap_px)
    if backend == "torch":
        import torch

        from geoalps.train.data import BatchPrep

        prep = BatchPrep(mean, std, nodata, n_classes=n_classes, device=device)
        torch_weights = torch.from_numpy(weights)

        def scores_of(images):
            with torch.inference_mode():
                x, _, tile_valid = prep({"image": torch.from_numpy(images)})
                probs = (torch.softmax(network(x).float(), dim=1).cpu() * torch_weights).numpy()
            return probs, tile_valid.cpu().numpy()
    else:
        def scores_of(images):
            x, tile_valid = normalise(images, mean, std, nodata)
            return np.asarray(network(x), dtype=np.float32) * weights, tile_valid

    shared = ranks is not None and ranks.distributed
    if shared:
        from geoalps.train import distributed

        parts = _rank_parts(windows, batch_size, ranks)
        if not ranks.main:
            for part, images in _read_parts(scene, parts, tile_px):
                distributed.gather_to_main(ranks, (part, *scores_of(images)) if part else (part, None, None))
            return None, None
    else:
        parts = [windows[start : start + batch_size] for start in range(0, len(windows), batch_size)]
    valid = np.zeros((scene.height, scene.width), dtype=bool)
    with _score_buffer((n_classes, scene.height, scene.width), scratch_dir) as scores:
        for part, images in _read_parts(scene, parts, tile_px):
            mine = (part, *scores_of(images)) if part else (part, None, None)
            for part_r, probs, tile_valid in (distributed.gather_to_main(ranks, mine) if shared else [mine]):
                for i, (col, row) in enumerate(part_r):
                    _add_tile(scores, valid, scene, col, row, probs[i], tile_valid[i])
                if progress is not None and part_r:
                    progress.update(len(part_r), message="tiles")
        classes = np.empty((scene.height, scene.width), dtype=np.int64)
        for row in range(0, scene.height, 1024):
            classes[row : row + 1024] = scores[:, row : row + 1024].argmax(axis=0)
    return classes, valid


@contextlib.contextmanager
def _score_buffer(shape: tuple[int, int, int], scratch_dir: str | os.PathLike | None) -> Iterator[np.ndarray]:
    """Zeroed float32 (K, H, W) class scores: in memory, or memory-mapped in a temporary file in
    ``scratch_dir`` beyond :data:`IN_MEMORY_LIMIT_BYTES` (removed on leaving)."""
    if math.prod(shape) * 4 <= IN_MEMORY_LIMIT_BYTES:
        yield np.zeros(shape, dtype=np.float32)
        return
    with tempfile.NamedTemporaryFile(prefix=".geoalps-scores.", suffix=".npy", dir=scratch_dir) as scratch:
        scores = np.lib.format.open_memmap(scratch.name, mode="w+", dtype=np.float32, shape=shape)
        try:
            yield scores
        finally:
            del scores


def _add_tile(scores: np.ndarray, valid: np.ndarray, scene: Scene, col0: int, row0: int,
              probs: np.ndarray, tile_valid: np.ndarray) -> None:
    """Add one tile's weighted scores (K, tile, tile), whose top-left pixel is (col0, row0), to the
    scene's; the part outside the scene is dropped."""
    tile_px = probs.shape[-1]
    r1, c1 = min(row0 + tile_px, scene.height), min(col0 + tile_px, scene.width)
    if r1 <= row0 or c1 <= col0:
        return
    tr, tc = slice(0, r1 - row0), slice(0, c1 - col0)
    scores[:, row0:r1, col0:c1] += probs[:, tr, tc]
    valid[row0:r1, col0:c1] |= tile_valid[tr, tc]


def predict(
    checkpoint: str | os.PathLike,
    scene: str | os.PathLike,
    output: str | os.PathLike,
    polygons: str | os.PathLike | None = None,
    overwrite: bool = False,
    overlap_px: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    threads: int | None = None,
    progress_lines: bool = False,
    quiet: bool = False,
    backend: str = "torch",
) -> Path:
    """Predict a class raster (and optionally polygons) for ``scene`` with a geoalps model.

    Args:
        checkpoint: model from ``geoalps train`` (or a ``pretrain`` with pseudo classes).
        scene: raster with the model's band count.
        output: GeoTIFF to write on the scene grid.
        polygons: GeoPackage to write the classes to as polygons (layer ``masks``).
        overwrite: replace existing outputs.
        overlap_px: tile overlap (default a quarter tile).
        batch_size: tiles per forward pass.
        device: "auto", "cpu", "cuda", ...
        threads: torch CPU threads (None: torch's default).
        progress_lines / quiet: ``geoalps-progress:`` lines / no progress at all.
        backend: "torch" (a .pt checkpoint) or "onnx" (a model from ``geoalps export``, run by
            onnxruntime on the CPU; torch is not imported).

    Cost: see :func:`predict_classes`; vectorizing is proportional to the number of regions.
    """
    from geoalps.progress import Progress
    from geoalps.train.data import open_north_up

    if backend not in BACKENDS:
        raise OptionError(f"--backend {backend!r}: use {', '.join(BACKENDS)}")
    check_writable(output, overwrite)
    if polygons is not None:  # any output format, by extension (geoalps.outputs.formats)
        from geoalps.outputs.formats import check_output

        check_output(polygons, overwrite, others=(output,))
    ranks = None
    if backend == "onnx":
        network, record, dev = _onnx_network(checkpoint, device, threads)
    else:
        network, record, ranks = _torch_network(checkpoint, device, threads, quiet)
        dev = ranks.device
    main = ranks is None or ranks.main
    n_classes, names, colours = _checkpoint_classes(record)
    grid = open_north_up(scene)
    if grid.count != record["bands"]["count"]:
        raise InputError(f"{scene}: {grid.count} bands, but {checkpoint} was trained on {record['bands']['count']}")
    with Progress(1, desc="predict", unit="tile", lines=progress_lines, enabled=main and not quiet,
                  leave=False) as progress:
        classes, valid = predict_classes(
            network, grid, record["tile_size_px"], n_classes, record["norm"]["mean"], record["norm"]["std"],
            overlap_px, batch_size, dev, grid.nodata, progress, Path(output).parent, progress_reserve=0.1,
            backend=backend, ranks=ranks,
        )
        if not main:  # the first process writes
            _finish(ranks)
            return Path(output)
        left = progress.total - progress.count
        progress.update(0, message=f"writing {output}")
        write_class_raster(output, grid, classes, valid, n_classes, names, colours, overwrite)
        if polygons is not None:
            progress.update(left // 2, message=f"writing {polygons}")
            write_class_polygons(polygons, grid, classes, valid, n_classes, names, overwrite)
        progress.update(progress.total - progress.count, message="done")
    _finish(ranks)
    return Path(output)


def _finish(ranks: Any) -> None:
    if ranks is not None:
        from geoalps.train.distributed import finish

        finish(ranks)


def _torch_network(checkpoint: str | os.PathLike, device: str, threads: int | None,
                   quiet: bool = False) -> tuple[Any, dict, Any]:
    """(network, checkpoint record, the processes and device) of a .pt model; under torchrun the
    processes share the windows (geoalps.train.distributed), the first line says so."""
    import torch

    from geoalps.train import distributed
    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.options import DISTRIBUTED_TIMEOUT_S

    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    if ckpt["arch"]["num_classes"] <= 0:
        raise ModelError(f"{checkpoint}: MIM-only pre-trained model has no classes; fine-tune it with 'geoalps train --init'")
    ranks = distributed.start(device, DISTRIBUTED_TIMEOUT_S)
    if ranks.distributed and ranks.main and not quiet:
        import sys

        print(ranks.describe(), file=sys.stderr)
    return _network(ckpt, ranks.device), ckpt, ranks


def _onnx_network(checkpoint: str | os.PathLike, device: str, threads: int | None) -> tuple[Any, dict, str]:
    """(onnxruntime model, its geoalps metadata record, "cpu") of an exported .onnx model."""
    from geoalps.train.distributed import launched
    from geoalps.train.export import OnnxModel

    if launched():
        raise OptionError("--backend onnx runs in one process; start it without torchrun")
    if device not in ("auto", "cpu"):
        raise OptionError(f"--device {device}: --backend onnx runs on the CPU (onnxruntime); drop --device")
    model = OnnxModel(checkpoint, threads)
    return model, model.record, "cpu"


def _network(ckpt: dict[str, Any], device: Any) -> Callable[[Any], Any]:
    """The checkpoint's network in eval mode on ``device``, under autocast where that pays (CUDA)."""
    import torch

    from geoalps.devices import autocast_dtype
    from geoalps.train.models import build_model

    model = build_model(ckpt["arch"])
    model.load_state_dict(ckpt["model"])
    model.eval().to(device)
    amp = autocast_dtype(device, "auto")

    def network(x):
        if amp is None:
            return model(x)
        with torch.autocast(device.type, dtype=amp):
            return model(x)

    return network


def _checkpoint_classes(ckpt: dict[str, Any]) -> tuple[int, list[str], list[tuple[int, int, int]]]:
    """(K, one name per class, one RGB colour per class) from a checkpoint, defaults filling gaps."""
    from geoalps.outputs.raster import default_class_names
    from geoalps.train.loop import default_class_colours

    n_classes = ckpt["arch"]["num_classes"]
    names = list(ckpt["classes"].get("names") or [])
    names = (names + default_class_names(n_classes)[len(names):])[:n_classes]
    colours = [tuple(c[:3]) for c in ckpt["classes"].get("colours") or []]
    if len(colours) < n_classes:
        colours = default_class_colours(n_classes)
    return n_classes, names, colours[:n_classes]


def write_class_raster(
    path: str | os.PathLike,
    scene: Scene,
    classes: np.ndarray,
    valid: np.ndarray,
    n_classes: int,
    names: list[str],
    colours: list[tuple[int, int, int]],
    overwrite: bool = False,
) -> None:
    """Write classes on exactly ``scene``'s grid (atomic), nodata where ``valid`` is False.

    Through :func:`geoalps.outputs.raster.open_label_raster`, so the raster carries the one tag
    contract readers rely on (band-1 ``n_classes`` and ``;``-joined ``class_names``, the QGIS
    plugin's palette labels), and the ``.qml`` sidecar with the K named classes beside it.
    """
    from geoalps.outputs.raster import label_raster_dtype, open_label_raster, write_raster_style

    dtype, nodata = label_raster_dtype(n_classes)
    out = np.where(valid, classes, nodata).astype(dtype)
    with atomic_path(path, overwrite) as tmp:
        with open_label_raster(tmp, scene, n_classes, what="class", class_names=names, colours=colours) as dst:
            dst.write(out, 1)
    write_raster_style(path, n_classes, names, colours)


def write_class_polygons(
    path: str | os.PathLike,
    scene: Scene,
    classes: np.ndarray,
    valid: np.ndarray,
    n_classes: int,
    names: list[str],
    overwrite: bool = False,
) -> None:
    """Connected regions of equal class as polygons: the ``masks`` layer of
    :func:`geoalps.outputs.vector.write_layer` (``instance_id`` from 1, ``class_id``,
    ``class_name``, ``scene``, ``area``), with the categorized QGIS style on ``class_id``.

    Cost: rasterio.features.shapes over the whole raster; polygons are written in batches of
    :data:`geoalps.outputs.vector.BATCH_ROWS`, so memory follows one batch plus the raster (a
    noisy prediction on a large scene still makes many small polygons to write).
    """
    from geoalps.outputs.vector import write_layer

    write_layer(_class_regions(scene, classes, valid, n_classes, names), path, scene.crs_wkt, overwrite=overwrite,
                n_classes=n_classes, class_field="class_id", class_names=list(names))


def _class_regions(scene: Scene, classes: np.ndarray, valid: np.ndarray, n_classes: int,
                   names: list[str]) -> Iterator[Any]:
    """GeoDataFrames of at most ``BATCH_ROWS`` regions (class_id, class_name, scene, geometry)."""
    import geopandas as gpd
    import shapely
    from rasterio import features as rio_features

    from geoalps.outputs.vector import BATCH_ROWS

    def frame(geoms: list, ids: list[int]):
        return gpd.GeoDataFrame(
            {"class_id": np.asarray(ids, dtype=np.int64),
             "class_name": [names[i] if i < len(names) else f"class {i}" for i in ids],
             "scene": scene.name},
            geometry=geoms, crs=scene.crs_wkt,
        )

    dtype = np.uint8 if n_classes <= 255 else np.int32
    geoms, ids = [], []
    for geojson, value in rio_features.shapes(classes.astype(dtype), mask=valid, connectivity=4, transform=scene.transform):
        geoms.append(shapely.geometry.shape(geojson))
        ids.append(int(value))
        if len(ids) == BATCH_ROWS:
            yield frame(geoms, ids)
            geoms, ids = [], []
    if ids:
        yield frame(geoms, ids)
