"""``geoalps export``: models out to ONNX (thin over :mod:`geoalps.train.export`)."""
from __future__ import annotations

import click

from geoalps.cli import main
from geoalps.cli.options import overwrite_opt, quiet_opt


@main.command("export")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="ONNX model to write (.onnx).")
@overwrite_opt
@quiet_opt
def export_command(model, output, overwrite, quiet):
    """Write MODEL (a .pt from 'geoalps train') as an ONNX model for onnxruntime and QGIS Deepness.

    The batch is dynamic, tiles are the model's tile size; the output is class probabilities.
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
    export_onnx(model, output, overwrite=overwrite)
    if not quiet:
        click.echo(f"geoalps: wrote {output}", err=True)
