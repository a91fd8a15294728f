"""``geoalps label``: thin over :func:`geoalps.labelling.run.label`."""
from __future__ import annotations

import click

from geoalps.cli import main
from geoalps.options import ENGINE_CHOICES, FEATURE_CHOICES, LabelOptions, MODEL_TYPE_CHOICES

_DEFAULTS = LabelOptions()


def _nodata(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)  # accepts "nan"
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (use e.g. 0, -9999 or nan)") from None


@main.command("label")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="GeoPackage to write (layer 'masks').")
@click.option("--engine", type=click.Choice(ENGINE_CHOICES), default=_DEFAULTS.engine, show_default=True,
              help="Mask engine: sam needs a checkpoint; classical needs no weights; auto picks sam when a checkpoint is found.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="SAM checkpoint (.pth), any size. Also read from GEOALPS_SAM_CHECKPOINT.")
@click.option("--model-type", type=click.Choice(MODEL_TYPE_CHOICES), default=_DEFAULTS.model_type, show_default=True,
              help="SAM encoder size; auto infers it from the checkpoint's tensor shapes.")
@click.option("--device", default=_DEFAULTS.device, show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--sam-generator", type=click.Choice(["fast", "reference"]), default=_DEFAULTS.sam_generator, show_default=True,
              help="geoalps's fast automatic mask generator or segment_anything's reference one.")
@click.option("--points-per-side", type=click.IntRange(1, 256), default=_DEFAULTS.points_per_side, show_default=True)
@click.option("--points-per-batch", type=click.IntRange(1, 4096), default=_DEFAULTS.points_per_batch, show_default=True)
@click.option("--tile-batch", type=click.IntRange(0, 64), default=_DEFAULTS.tile_batch, show_default=True,
              help="Tiles per engine call: SAM encodes them in one batch. 0 = auto (1 on CPU, by free memory on CUDA).")
@click.option("--pred-iou-thresh", type=float, default=_DEFAULTS.pred_iou_thresh, show_default=True)
@click.option("--stability-thresh", type=float, default=_DEFAULTS.stability_thresh, show_default=True)
@click.option("--crop-layers", type=click.IntRange(0, 4), default=_DEFAULTS.crop_layers, show_default=True)
@click.option("--min-area-px", type=click.IntRange(1), default=_DEFAULTS.min_area_px, show_default=True,
              help="Drop masks smaller than this many pixels.")
@click.option("--max-area-frac", type=float, default=_DEFAULTS.max_area_frac, show_default=True,
              help="Drop masks larger than this fraction of the tile (ALPS area threshold).")
@click.option("--dedupe-iou", type=click.FloatRange(0, 1), default=_DEFAULTS.dedupe_iou, show_default=True,
              help="Inside a tile, drop a mask overlapping a better one by more than this IoU.")
@click.option("--bands", default=None,
              help="Bands the engine sees, 1-based: '4,3,2', a single band '1', or a preset "
                   "(rgb, bgr, nrg, sentinel2-rgb, sentinel2-nrg, landsat8-rgb, landsat8-nrg). "
                   "Default rgb for 3+ bands, the band repeated for 1 band.")
@click.option("--nodata", default=None, help="Nodata value overriding the file's (a number or nan).")
@click.option("--tile-size", type=click.IntRange(64), default=_DEFAULTS.tile_size, show_default=True, help="Tile size in pixels.")
@click.option("--overlap", type=click.IntRange(0), default=_DEFAULTS.overlap, show_default=True, help="Tile overlap in pixels.")
@click.option("--classes", type=click.IntRange(1, 65534), default=_DEFAULTS.classes, show_default=True,
              help="Number of pseudo-classes (k of the online k-means).")
@click.option("--kmeans-model", type=click.Path(dir_okay=False), default=None,
              help="Reuse this k-means model if it exists (same classes across runs), else fit and save it here.")
@click.option("--features", type=click.Choice(FEATURE_CHOICES), default=_DEFAULTS.features, show_default=True,
              help="Mask features to cluster: sam (pooled SAM embedding), spectral (all bands + shape), both. "
                   "auto: both with sam, spectral otherwise.")
@click.option("--raster-out", type=click.Path(), default=None,
              help="Pseudo-label GeoTIFF on the scene's grid; a folder for several scenes (<scene>.labels.tif).")
@click.option("--allow-pixel-coords", is_flag=True, help="Label images without georeferencing in pixel coordinates.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Tiles in parallel on a local dask cluster of this many processes; 1 runs in-process.")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT", help="Run tiles on an existing dask cluster.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its work folder (OUTPUT.geoalps-work).")
@click.option("--keep-work", is_flag=True, help="Keep the work folder of per-tile results after a finished run.")
@click.option("--seed", type=int, default=_DEFAULTS.seed, show_default=True, help="Same inputs + seed = same output.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or log lines.")
@click.option("--progress-lines", is_flag=True, help="Print 'geoalps-progress: <percent> <message>' lines on stderr (for the QGIS plugin).")
def label_command(scenes, output, raster_out, kmeans_model, overwrite, quiet, progress_lines, nodata,
                  workers, scheduler, resume, keep_work, **options):
    """Label SCENES (GeoTIFFs, or folders of image chips) into a GeoPackage of pseudo-classed polygons.

    \b
    Example:
      $ geoalps label sample_data/scene_rgbn_u16.tif -o labels.gpkg --engine classical --classes 8
      $ geoalps label scene.tif -o out.gpkg --checkpoint sam_vit_b_01ec64.pth --bands 4,3,2 --raster-out out.tif
      $ geoalps label tiles/ -o all.gpkg --workers 2 --resume
    """
    import sys

    from geoalps.labelling.run import label

    stats = label(
        list(scenes), output, raster_out=raster_out, kmeans_model=kmeans_model, overwrite=overwrite,
        quiet=quiet, progress_lines=progress_lines, nodata=_nodata(nodata), workers=workers,
        scheduler=scheduler, resume=resume, keep_work=keep_work, return_gdf=False, **options,
    )
    if not quiet:
        print(
            f"geoalps: wrote {output}: {stats['objects']} polygons, {stats['classes_used']} pseudo-classes, "
            f"{stats['tiles']} tiles ({stats['tiles_skipped']} all nodata, {stats['tiles_resumed']} resumed) "
            f"in {stats['seconds']:.1f} s",
            file=sys.stderr,
        )
