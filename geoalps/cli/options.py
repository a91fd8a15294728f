"""CLI options declared once and shared by the commands that take them (as rasterio's
``rio/options.py``): one help text, one default and one check per option.

Defaults, choices and limits come from :mod:`geoalps.options`, never from copies here.
"""
from __future__ import annotations

from typing import Callable

import click

from geoalps.inputs.bands import BAND_NAME_VOCABULARY
from geoalps.options import (CLASSES_MAX, ENGINE_CHOICES, FEATURE_CHOICES, MODEL_TYPE_CHOICES,
                             SAM_GENERATOR_CHOICES, TILE_SIZE_MIN_PX, LabelOptions, RunOptions)

_LABEL = LabelOptions()
_RUN = RunOptions()


def _nodata(ctx, param, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # accepts "nan"
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (use e.g. 0, -9999 or nan)") from None


def stack(*options: Callable) -> Callable:
    """Several option decorators as one (applied in the order listed, top to bottom in --help)."""
    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


# -- shared by several commands ---------------------------------------------------------------
overwrite_opt = click.option(
    "--overwrite", is_flag=True,
    help="Replace existing outputs (never an input, nor a GeoPackage holding layers of others or open with "
         "unsaved changes in another program).")
quiet_opt = click.option("-q", "--quiet", is_flag=True, help="No progress bar or log lines.")
progress_lines_opt = click.option(
    "--progress-lines", is_flag=True,
    help="Print 'geoalps-progress: <percent> <message>' lines on stderr (for the QGIS plugin).")
device_opt = click.option("--device", default=_LABEL.device, show_default=True,
                          help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps.")
seed_opt = click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=_LABEL.seed, show_default=True,
                        help="Same inputs + seed = same output.")
threads_opt = click.option("--threads", type=click.IntRange(1), default=None,
                           help="torch CPU threads [default: torch's]; 1 is often fastest on a busy machine.")

# -- labelling: the settings that change results (LabelOptions) -------------------------------
engine_opt = click.option(
    "--engine", type=click.Choice(ENGINE_CHOICES), default=_LABEL.engine, show_default=True,
    help="Mask engine: sam (SAM 1) and sam2 (SAM 2/2.1) need a checkpoint; classical needs no weights; auto picks the engine of the checkpoint found, once a run (the output's metadata records the engine used).")
sam_opts = stack(
    click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
                 help="SAM (.pth) or SAM 2 (.pt) checkpoint, any size. Also read from GEOALPS_SAM_CHECKPOINT."),
    click.option("--model-type", type=click.Choice(MODEL_TYPE_CHOICES), default=_LABEL.model_type, show_default=True,
                 help="Encoder size (vit_* for sam, hiera_* for sam2); auto infers it from the checkpoint's tensor shapes."),
    device_opt,
    click.option("--sam-generator", type=click.Choice(SAM_GENERATOR_CHOICES), default=_LABEL.sam_generator,
                 show_default=True, help="geoalps's fast automatic mask generator or segment_anything's reference one."),
    click.option("--points-per-side", type=click.IntRange(1, 256), default=_LABEL.points_per_side, show_default=True),
    click.option("--points-per-batch", type=click.IntRange(1, 4096), default=_LABEL.points_per_batch, show_default=True),
    click.option("--pred-iou-thresh", type=float, default=_LABEL.pred_iou_thresh, show_default=True),
    click.option("--stability-thresh", type=float, default=_LABEL.stability_thresh, show_default=True),
    click.option("--crop-layers", type=click.IntRange(0, 4), default=_LABEL.crop_layers, show_default=True),
    click.option("--box-nms-iou", type=click.FloatRange(0, 1), default=_LABEL.box_nms_iou, show_default=True,
                 help="SAM's box non-maximum suppression inside the generator."),
)
mask_filter_opts = stack(
    click.option("--min-area-px", type=click.IntRange(1), default=_LABEL.min_area_px, show_default="auto",
                 help="Drop masks smaller than this many pixels (auto: 64 for sam; for classical its "
                      "smallest region, from the ground resolution)."),
    click.option("--max-area-frac", type=float, default=_LABEL.max_area_frac, show_default="auto",
                 help="Drop masks larger than this fraction of the tile (auto: 0.3 for sam, ALPS's area "
                      "threshold; for classical 1, every region kept: its regions partition the tile)."),
    click.option("--dedupe-iou", type=click.FloatRange(0, 1), default=_LABEL.dedupe_iou, show_default=True,
                 help="Inside a tile, drop a mask overlapping a better one by more than this mask IoU."),
)
classical_opts = stack(
    click.option("--classical-scale", type=float, default=_LABEL.classical_scale, show_default=True,
                 help="Region size of the classical engine (positive; larger = larger regions, for crowns or "
                      "roofs split into pieces, smaller for merged ones). Used only by the classical engine."),
    click.option("--classical-split/--no-classical-split", default=_LABEL.classical_split, show_default=True,
                 help="Cut land-cover-sized regions of the classical engine where the tile's spectral clusters "
                      "change (covers of similar brightness with a soft edge); roofs and crowns stay whole, and "
                      "the classes are still learnt from the uncut regions. Purer regions for about x1.6 the "
                      "time per tile; --no-classical-split: the regions and speed of earlier versions "
                      "(benchmarks/label_quality)."),
)
scene_opts = stack(
    click.option("--bands", default=None,
                 help="Bands the engine sees, 1-based: '4,3,2', a single band '1', or a preset "
                      "(rgb, bgr, nrg, sentinel2-rgb, sentinel2-nrg, landsat8-rgb, landsat8-nrg). "
                      "Default: the red, green and blue bands when the band roles are known (--band-names, "
                      "band descriptions, colour interpretation), else 1,2,3 for 3+ bands, the band repeated "
                      "for 1 band."),
    click.option("--band-names", default=None, metavar="NAMES",
                 help="What each band is, one name a band in file order, e.g. blue,green,red,nir; names: "
                      f"{', '.join(BAND_NAME_VOCABULARY)}. Default: the file's band descriptions, else its "
                      "colour interpretation; unknown bands get role-free ratios instead of NDVI and NDWI."),
    click.option("--nodata", default=None, callback=_nodata, help="Nodata value overriding the file's (a number or nan)."),
    click.option("--tile-size", "tile_size_px", type=click.IntRange(TILE_SIZE_MIN_PX), default=_LABEL.tile_size_px, show_default=True,
                 help="Tile size in pixels."),
    click.option("--overlap", "overlap_px", type=click.IntRange(0), default=_LABEL.overlap_px, show_default=True,
                 help="Tile overlap in pixels (at most half the tile)."),
    click.option("--allow-pixel-coords", is_flag=True, help="Label images without georeferencing in pixel coordinates."),
)
area_opts = stack(
    click.option("--aoi", default=None, metavar="MINX,MINY,MAXX,MAXY|FILE",
                 help="Area of interest: a box (in the scene's CRS, or --aoi-crs) or a vector file (any OGR format). "
                      "Only tiles meeting it are read; polygons and label rasters are clipped to it."),
    click.option("--aoi-crs", default=None, metavar="CRS",
                 help="CRS of the --aoi box (e.g. EPSG:4326), or of a vector file that has none. Default: the scene's."),
    click.option("--assets", default=None, metavar="KEYS",
                 help="Bands of STAC items: asset keys or eo:bands common names, e.g. red,green,blue,nir "
                      "(default: every data asset)."),
)
clustering_opts = stack(
    click.option("--classes", type=click.IntRange(1, CLASSES_MAX), default=_LABEL.classes, show_default=True,
                 help="Number of pseudo-classes (k of the online k-means)."),
    click.option("--features", type=click.Choice(FEATURE_CHOICES), default=_LABEL.features, show_default=True,
                 help="Mask features to cluster: sam (pooled SAM embedding), spectral (mean of every band + "
                      "spectral indices), both. auto: both with sam, spectral otherwise."),
    seed_opt,
)

polygon_opts = stack(
    click.option("--simplify", default=None, metavar="TOL",
                 help="Coverage simplification of the polygons (neighbours keep sharing their edges): "
                      "a tolerance in pixels (1.5px), metres (2m) or CRS units (2). Default: pixel outlines."),
)

# -- labelling: how the run executes (RunOptions) ---------------------------------------------
run_opts = stack(
    click.option("--workers", type=click.IntRange(0), default=_RUN.workers, show_default=True,
                 help="Tiles in parallel on a local dask cluster of this many processes; 1 runs in-process; "
                      "0 = auto: one process a core for the classical engine (at most one a tile), 1 for SAM "
                      "(torch uses the cores). With --device cuda and several GPUs, worker i uses GPU i mod the "
                      "GPUs (on --scheduler clusters use dask-cuda workers)."),
    click.option("--scheduler", default=None, metavar="tcp://HOST:PORT", help="Run tiles on an existing dask cluster."),
    click.option("--tile-batch", type=click.IntRange(0, 64), default=_RUN.tile_batch, show_default=True,
                 help="Tiles per engine call: SAM encodes them in one batch. 0 = auto (1 on CPU, by free memory on CUDA)."),
    click.option("--resume", is_flag=True, help="Continue an interrupted run from its work folder (OUTPUT.geoalps-work)."),
    click.option("--keep-work", is_flag=True, help="Keep the work folder of per-tile results after a finished run."),
    overwrite_opt,
    quiet_opt,
    progress_lines_opt,
)
