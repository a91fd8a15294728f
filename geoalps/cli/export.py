"""``geoalps export``: models out to ONNX (thin over :mod:`geoalps.train.export`)."""
from __future__ import annotations

import click

from geoalps.cli import main
from geoalps.cli.options import overwrite_opt, quiet_opt


@main.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX model to write (.onnx).")
@click.option("--fixed-size", is_flag=True,
              help="Declare height and width as the model's tile size (only the batch dynamic), for QGIS Deepness "
                   "0.6.x, whose dock widget reads the tile size from the input's width and reports a dynamic one "
                   "as a failed load.")
@overwrite_opt
@quiet_opt
def export_command(model, output, fixed_size, overwrite, quiet):
    """Write MODEL (a .pt from 'geoalps train') as an ONNX model for onnxruntime and QGIS Deepness.

    Batch, height and width are dynamic (height and width multiples of 32 px; the model was
    trained on, and is best cut into, its tile size, the metadata's tile_size; --fixed-size
    for Deepness 0.6.x); the output is class probabilities.
    Band normalisation and class names travel in the model's metadata (Deepness's keys:
    model_type, class_names, tile_size, tiles_overlap, standardization_mean/std for raster values
    scaled by 1/255; plus a 'geoalps' record that 'geoalps predict --backend onnx' reads).
    Needs the export extra: pip install 'geoalps[export]'.

    \b
    Example:
      $ geoalps export model.pt -o model.onnx
      $ geoalps predict model.onnx scene.tif -o scene.pred.tif --backend onnx
    """
    from geoalps.files import check_distinct
    from geoalps.train.export import export_onnx

    check_distinct([model], [(output, [output])])
    export_onnx(model, output, overwrite=overwrite, any_size=not fixed_size)
    if not quiet:
        click.echo(f"geoalps: wrote {output}", err=True)


@main.command("export-chips")
@click.argument("labels", type=click.Path(dir_okay=False))
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder to write (new or empty).")
@click.option("--chip-size", "chip_size_px", type=click.IntRange(64), default=256, show_default=True,
              help="Square chips, in scene pixels.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Share of the blocks of chips held out for validation.")
@click.option("--block-chips", type=click.IntRange(1), default=4, show_default=True,
              help="Blocks of N x N neighbouring chips go to one split together (no leak between neighbours).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Draws the validation blocks.")
@overwrite_opt
@quiet_opt
def export_chips_command(labels, scenes, output, chip_size_px, val_fraction, block_chips, seed, overwrite, quiet):
    """Write LABELS (a layer from 'geoalps label' or 'predict') over SCENE... as training chips.

    OUTPUT gets images/ (GeoTIFF chips on the scene grid), masks/ (uint16: 0 no object, k+1
    class k), annotations/instances_train.json and instances_val.json (COCO instance
    segmentation, one annotation per object clipped to its chip, category k+1 named after the
    class) and splits/train.txt, val.txt: loadable by torchgeo, mmseg/mmdet and detectron2 as
    they are.

    \b
    Example:
      $ geoalps label a.tif b.tif -o labels.gpkg --engine classical
      $ geoalps export-chips labels.gpkg a.tif b.tif -o chips/
    """
    from geoalps.train.chips import ChipOptions, export_chips

    summary = export_chips(labels, list(scenes), output, ChipOptions(chip_size_px, val_fraction, block_chips, seed),
                           overwrite=overwrite)
    if not quiet:
        click.echo(f"geoalps: wrote {output}: {summary['chips']['train']} training and {summary['chips']['val']} "
                   f"validation chips, {sum(summary['annotations'].values())} objects", err=True)
