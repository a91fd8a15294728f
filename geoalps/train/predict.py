"""Apply a trained model to a scene: overlapping tiles, blended class scores, a raster on the scene grid.

Tiles come from torchgeo's ``GridGeoSampler`` with ``stride = tile - overlap`` over the scene's
own grid (the scene is read as it is, never warped), so every tile is whole pixels of the scene.
Each tile's softmax scores are weighted by a ramp that falls towards the tile edge and summed per
pixel; the class is the arg-max of the sum, which removes seams where neighbouring tiles disagree.
The output has the scene's CRS, transform and size, class ids 0..K-1, nodata 255 (65535 beyond
255 classes) on the scene's nodata pixels, and a colour table; ``--polygons`` vectorizes it.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from geoalps.errors import GeoAlpsError

#: Score accumulators larger than this go to a memory-mapped temp file beside the output.
IN_MEMORY_LIMIT_BYTES = 1 << 30


def tile_weights(tile_px: int, overlap_px: int) -> np.ndarray:
    """(tile, tile) blending weights: 1 in the middle, a linear ramp over ``overlap_px`` at the edges."""
    ramp = np.ones(tile_px, dtype=np.float32)
    if overlap_px > 0:
        edge = np.minimum(np.arange(tile_px) + 0.5, tile_px - np.arange(tile_px) - 0.5)
        ramp = np.clip(edge / overlap_px, 0.05, 1.0).astype(np.float32)
    return np.outer(ramp, ramp)


def scene_chips(dataset: Any, scene: Any, tile_px: int, stride_px: int) -> Iterator[tuple[slice, slice, slice]]:
    """Tile queries covering the whole scene, each ``tile_px`` square on the scene grid.

    torchgeo's GridGeoSampler skips an area smaller than its tile, and float noise can make a
    scene exactly one tile wide look smaller; so the sampler gets the tile in map units clipped
    to the scene extent, and each query is grown back to a full tile (to the right and down).
    What falls outside the scene reads as fill and is dropped when scores are accumulated.
    """
    from torchgeo.samplers import GridGeoSampler, Units

    xs_all, ys_all, _ = dataset.bounds
    xres, yres = scene.res
    size = (min(tile_px * yres, ys_all.stop - ys_all.start), min(tile_px * xres, xs_all.stop - xs_all.start))
    stride = (min(stride_px * yres, size[0]), min(stride_px * xres, size[1]))
    for xs, ys, ts in GridGeoSampler(dataset, size=size, stride=stride, units=Units.CRS):
        yield slice(xs.start, xs.start + tile_px * xres), slice(ys.stop - tile_px * yres, ys.stop), ts


def predict_classes(
    network: Callable[[Any], Any],
    scene_path: str | os.PathLike,
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
) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``network`` scores over a scene; return (classes (H, W) int64, valid (H, W) bool).

    Args:
        network: maps a normalised (B, C, tile, tile) tensor to (B, K, tile, tile) logits.
        scene_path: the scene raster.
        tile_px: network input size.
        n_classes: K.
        mean, std: band normalisation of the model.
        overlap_px: tile overlap (default tile/4; stride = tile - overlap).
        batch_size: tiles per forward pass.
        device: torch device for the network input.
        nodata: the scene's nodata value (pixels where every band equals it are invalid).
        progress: a ``Progress`` counted in tiles.
        scratch_dir: where a large score accumulator is memory-mapped.
        progress_reserve: share of the progress bar left to the caller's later steps (writing).

    Cost: one forward pass per tile, (tile / stride)^2 tiles per tile area (1.8x at overlap
    tile/4); memory K x H x W float32 for the scores (memory-mapped beyond 1 GiB) plus one bool
    and one int64 array of H x W.
    """
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import stack_samples

    from geoalps.train.data import BatchPrep, _dataset_classes, read_scene_info

    scene = read_scene_info(scene_path)
    overlap_px = tile_px // 4 if overlap_px is None else int(overlap_px)
    if not 0 <= overlap_px < tile_px:
        raise GeoAlpsError(f"--overlap must be in [0, {tile_px}) px for {tile_px} px tiles")
    SceneImages, _, _ = _dataset_classes()
    dataset = SceneImages(paths=[scene.path], crs=scene.crs, res=scene.res)
    chips = list(scene_chips(dataset, scene, tile_px, tile_px - overlap_px))
    if progress is not None:
        progress.set_total(math.ceil(max(len(chips), 1) / (1 - progress_reserve)))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=chips, collate_fn=stack_samples)
    prep = BatchPrep(mean, std, nodata, n_classes=n_classes, device=device)
    weights = torch.from_numpy(tile_weights(tile_px, overlap_px))

    shape = (n_classes, scene.height, scene.width)
    scratch = None
    if n_classes * scene.height * scene.width * 4 > IN_MEMORY_LIMIT_BYTES:
        scratch = tempfile.NamedTemporaryFile(prefix=".geoalps-scores.", suffix=".npy", dir=scratch_dir)
        scores = np.lib.format.open_memmap(scratch.name, mode="w+", dtype=np.float32, shape=shape)
    else:
        scores = np.zeros(shape, dtype=np.float32)
    valid = np.zeros((scene.height, scene.width), dtype=bool)
    left, top = scene.transform.c, scene.transform.f
    xres, yres = scene.res
    try:
        with torch.inference_mode():
            for batch in loader:
                x, _, tile_valid = prep(batch)
                probs = torch.softmax(network(x).float(), dim=1).cpu() * weights
                tile_valid = tile_valid.cpu().numpy()
                for i, (xs, ys, _) in enumerate(batch["bounds"]):
                    col0 = round((xs.start - left) / xres)
                    row0 = round((top - ys.stop) / yres)
                    r0, c0 = max(row0, 0), max(col0, 0)
                    r1, c1 = min(row0 + tile_px, scene.height), min(col0 + tile_px, scene.width)
                    if r1 <= r0 or c1 <= c0:
                        continue
                    tr, tc = slice(r0 - row0, r1 - row0), slice(c0 - col0, c1 - col0)
                    scores[:, r0:r1, c0:c1] += probs[i, :, tr, tc].numpy()
                    valid[r0:r1, c0:c1] |= tile_valid[i, tr, tc]
                if progress is not None:
                    progress.update(x.shape[0], message="tiles")
        classes = np.empty((scene.height, scene.width), dtype=np.int64)
        for row in range(0, scene.height, 1024):
            classes[row : row + 1024] = scores[:, row : row + 1024].argmax(axis=0)
    finally:
        del scores
        if scratch is not None:
            scratch.close()
    return classes, valid


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

    Cost: see :func:`predict_classes`; vectorizing is proportional to the number of regions.
    """
    import torch

    from geoalps.outputs.vector import check_writable
    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.data import read_scene_info
    from geoalps.devices import autocast_dtype, resolve_device
    from geoalps.train.loop import default_class_colours
    from geoalps.train.models import build_model
    from geoalps.train.progress import Progress

    check_writable(output, overwrite)
    if polygons is not None:
        check_writable(polygons, overwrite)
    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint)
    arch = ckpt["arch"]
    n_classes = arch["num_classes"]
    if n_classes <= 0:
        raise GeoAlpsError(f"{checkpoint}: MIM-only pre-trained model has no classes; fine-tune it with 'geoalps train --init'")
    info = read_scene_info(scene)
    if info.count != arch["in_chans"]:
        raise GeoAlpsError(f"{scene}: {info.count} bands, but {checkpoint} was trained on {arch['in_chans']}")
    dev = resolve_device(device)
    model = build_model(arch)
    model.load_state_dict(ckpt["model"])
    model.eval().to(dev)
    amp = autocast_dtype(dev, "auto")

    def network(x):
        if amp is None:
            return model(x)
        with torch.autocast(dev.type, dtype=amp):
            return model(x)

    with Progress(1, desc="predict", lines=progress_lines, enabled=not quiet) as progress:
        classes, valid = predict_classes(
            network, info.path, ckpt["tile_size_px"], n_classes, ckpt["norm"]["mean"], ckpt["norm"]["std"],
            overlap_px, batch_size, dev, info.nodata, progress, Path(output).parent, progress_reserve=0.1,
        )
        left = progress.total - progress.count
        progress.update(0, message=f"writing {output}")
        names = list(ckpt["classes"].get("names") or [f"class {k}" for k in range(n_classes)])
        colours = [tuple(c) for c in ckpt["classes"].get("colours") or []] or default_class_colours(n_classes)
        write_class_raster(output, info, classes, valid, n_classes, names, colours, overwrite)
        if polygons is not None:
            progress.update(left // 2, message=f"writing {polygons}")
            write_class_polygons(polygons, info, classes, valid, n_classes, names, overwrite)
        progress.update(progress.total - progress.count, message="done")
    return Path(output)


def write_class_raster(
    path: str | os.PathLike,
    scene: Any,
    classes: np.ndarray,
    valid: np.ndarray,
    n_classes: int,
    names: list[str],
    colours: list[tuple[int, int, int]],
    overwrite: bool = False,
) -> None:
    """Write classes on exactly ``scene``'s grid (atomic), nodata where ``valid`` is False."""
    import rasterio

    from geoalps.outputs.vector import atomic_path, label_raster_dtype

    dtype, nodata = label_raster_dtype(n_classes)
    out = np.where(valid, classes, nodata).astype(dtype)
    profile = {
        "driver": "GTiff", "width": scene.width, "height": scene.height, "count": 1, "dtype": dtype,
        "nodata": nodata, "crs": scene.crs, "transform": scene.transform, "tiled": True,
        "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    with atomic_path(path, overwrite) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(out, 1)
            if dtype == "uint8" and colours:
                dst.write_colormap(1, {k: (*colours[k][:3], 255) for k in range(min(n_classes, len(colours)))})
            dst.set_band_description(1, "class")
            dst.update_tags(CLASS_NAMES=",".join(names))
            dst.update_tags(1, n_classes=str(n_classes))
    if colours and len(colours) >= n_classes and len(names) >= n_classes:
        # QGIS default style beside the raster: only the K classes in the legend, named
        from geoalps.outputs.style import paletted_raster_qml, raster_style_path

        Path(raster_style_path(path)).write_text(
            paletted_raster_qml([tuple(c[:3]) for c in colours[:n_classes]], list(names[:n_classes])), encoding="utf-8")


def write_class_polygons(
    path: str | os.PathLike,
    scene: Any,
    classes: np.ndarray,
    valid: np.ndarray,
    n_classes: int,
    names: list[str],
    overwrite: bool = False,
) -> None:
    """Connected regions of equal class as polygons in a GeoPackage (layer ``masks``, QGIS style).

    Cost: rasterio.features.shapes over the whole raster; memory grows with the number and
    complexity of regions (a noisy prediction on a large scene makes many small polygons).
    """
    import geopandas as gpd
    import shapely
    from rasterio import features as rio_features

    from geoalps.outputs.vector import write_geopackage

    dtype = np.uint8 if n_classes <= 255 else np.int32
    geoms, ids = [], []
    for geojson, value in rio_features.shapes(classes.astype(dtype), mask=valid, connectivity=4, transform=scene.transform):
        geoms.append(shapely.geometry.shape(geojson))
        ids.append(int(value))
    frame = gpd.GeoDataFrame(
        {
            "instance_id": np.arange(len(ids), dtype=np.int64),
            "class_id": np.asarray(ids, dtype=np.int64),
            "class_name": [names[i] if i < len(names) else f"class {i}" for i in ids],
            "area": shapely.area(np.asarray(geoms, dtype=object)) if geoms else np.zeros(0),
            "scene": os.path.basename(scene.path),
        },
        geometry=geoms,
        crs=scene.crs,
    )
    write_geopackage(frame, path, overwrite=overwrite, n_classes=n_classes, class_field="class_id", class_names=names)
