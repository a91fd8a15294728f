"""``geoalps pretrain | train | predict | evaluate``: thin over :mod:`geoalps.train`.

torch and timm are imported inside the commands so ``geoalps --help`` stays instant.
"""
from __future__ import annotations

import inspect

import click

from geoalps.cli import main
from geoalps.cli.options import (device_opt, overwrite_opt, progress_lines_opt, quiet_opt, seed_opt, stack,
                                 threads_opt)
from geoalps.options import TILE_SIZE_MIN_PX
from geoalps.train.options import MODEL_SIZE_CHOICES, OBJECTIVE_CHOICES, PRECISION_CHOICES, TrainOptions

_TRAIN = TrainOptions()  # the defaults, declared once in the dataclass

#: The data-parallel paragraph of pretrain's and train's --help.
DATA_PARALLEL_HELP = """Data-parallel: torchrun --nproc-per-node N -m geoalps pretrain|train ... runs N processes
(torch DistributedDataParallel; nccl on CUDA, one GPU a process; gloo on CPU; several machines
through torchrun's --nnodes and --rdzv-endpoint). --batch-size and --steps-per-epoch are per
process: each step averages the gradients of N x BATCH_SIZE tiles (the global batch), and each
process draws its own tiles, seeded with --seed and its rank. --lr is applied as given, never
scaled with N; the usual (linear) rule for a global batch N times a 1-process run's is N x
that run's --lr. Only the first process writes the model, logs and progress; --resume
continues with any number of processes; a process that fails or waits more than --timeout
seconds for the others ends the run with one error."""


#: --images of pretrain and train: scenes as 'geoalps label' takes them (geoalps.inputs.sources.scene_sources).
IMAGES_HELP = ("Scenes, as 'geoalps label' takes them: raster files, folders (their image files, sorted), glob "
               "patterns in quotes ('scenes/*.tif', matches sorted) and STAC items (.json: one scene per item, its data "
               "assets); all with the same bands: --images a.tif b.tif.")
#: How a --labels folder pairs with the scenes (geoalps.train.data.labels_in_folder).
LABEL_FOLDER_HELP = ("(a multi-scene 'geoalps label --raster-out DIR/' run's DIR: DIR/<scene stem>.labels.tif, else the "
                     "one raster or vector file DIR/<scene stem>.*; other files are ignored).")


class _ListOptionsCommand(click.Command):
    """Accepts ``--images a.tif b.tif`` (the documented form) as well as ``--images a.tif --images b.tif``.

    Before click parses, each bare value following ``--images``/``--labels`` gets its own option
    name in front, so click's ``multiple=True`` collects them in order.
    """

    list_options = ("--images", "--labels")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        current = None
        for i, arg in enumerate(args):
            if arg == "--":
                out.extend(args[i:])
                break
            if arg.startswith("-"):
                name = arg.split("=", 1)[0]
                current = name if name in self.list_options else None
            elif current is not None and out[-1] != current:
                out.append(current)
            out.append(arg)
        return super().parse_args(ctx, out)


# Options shared by pretrain and train: budget, device, resume, progress (most are TrainOptions' fields).
_budget_options = stack(
    click.option("--model", "size", type=click.Choice(MODEL_SIZE_CHOICES), default="swin_t", show_default=True,
                 help="Backbone size (tiny: for tests and quick CPU runs)."),
    click.option("--tile-size", "tile_size_px", type=click.IntRange(TILE_SIZE_MIN_PX), default=None,
                 help=f"Input tile in pixels, a multiple of 32, at least {TILE_SIZE_MIN_PX} (the tile rule of label and "
                      "predict) [default: 224; tiny 64; train --init: the init's]."),
    click.option("--epochs", type=click.IntRange(1), default=_TRAIN.epochs, show_default=True),
    click.option("--steps-per-epoch", type=click.IntRange(1), default=_TRAIN.steps_per_epoch, show_default=True,
                 help="Batches of random tiles per epoch (per process when data-parallel)."),
    click.option("--batch-size", type=click.IntRange(1), default=_TRAIN.batch_size, show_default=True,
                 help="Tiles per batch and per process; data-parallel on N processes: N x this a step."),
    click.option("--lr", type=click.FloatRange(0, min_open=True), default=_TRAIN.lr, show_default=True,
                 help="Peak AdamW learning rate (warm-up, then cosine decay), for the global batch, never scaled."),
    click.option("--weight-decay", type=click.FloatRange(0), default=_TRAIN.weight_decay, show_default=True),
    click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=_TRAIN.val_fraction,
                 show_default=True, help="Share of each labelled area (a strip at its bottom) held out for validation."),
    click.option("--ignore-value", type=int, default=None, help="Label value to skip, besides the label nodata."),
    seed_opt,
    device_opt,
    click.option("--precision", type=click.Choice(PRECISION_CHOICES), default=_TRAIN.precision, show_default=True,
                 help="auto: bf16/fp16 autocast on CUDA, float32 elsewhere."),
    click.option("--workers", type=click.IntRange(0), default=None, help="DataLoader workers [default: 0 on CPU, 4 on GPU]."),
    threads_opt,
    click.option("--no-augment", is_flag=True, help="No random flips and quarter turns."),
    click.option("--resume", is_flag=True,
                 help="Continue from OUTPUT's .last.pt (written after every epoch), with any number of processes."),
    click.option("--timeout", "timeout_s", type=click.FloatRange(0, min_open=True), default=_TRAIN.timeout_s,
                 show_default=True, help="Data-parallel: seconds a process waits for the others before the run ends."),
    overwrite_opt,
    quiet_opt,
    progress_lines_opt,
)


def _train_options(kw: dict):
    """Move the CLI values that are :class:`~geoalps.train.loop.TrainOptions` fields out of ``kw``."""
    from dataclasses import fields

    kw["augment"] = not kw.pop("no_augment")
    return TrainOptions(**{f.name: kw.pop(f.name) for f in fields(TrainOptions) if f.name in kw})


def _done(output: str, history: list[dict], quiet: bool) -> None:
    from geoalps.train.distributed import is_main_process

    if quiet or not history or not is_main_process():
        return
    last = history[-1]
    extra = f", val mIoU {last['val_miou']:.3f}" if isinstance(last.get("val_miou"), float) else ""
    click.echo(f"geoalps: wrote {output} after {last['epoch']} epochs (loss {last['train_loss']:.4f}{extra})", err=True)


@main.command("pretrain", cls=_ListOptionsCommand)
@click.option("--images", multiple=True, required=True, type=click.Path(), help=IMAGES_HELP)
@click.option("--labels", multiple=True, type=click.Path(),
              help="Pseudo-label rasters from 'geoalps label --raster-out' on their scene's grid: one per scene, "
                   "in order (files or glob patterns), or ONE folder paired with the scenes by name " + LABEL_FOLDER_HELP)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write (.pt).")
@click.option("--objective", type=click.Choice(OBJECTIVE_CHOICES), default="pseudo", show_default=True,
              help="pseudo: supervised on pseudo-classes (ALPS); mim: SimMIM masked image modelling; both: the sum.")
@click.option("--backbone-weights", type=click.Path(dir_okay=False), default=None,
              help="timm/Microsoft Swin checkpoint of the same size to start from; the first conv is adapted to the band count.")
@click.option("--mask-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.6, show_default=True,
              help="SimMIM: share of mask patches hidden.")
@click.option("--mask-patch", "mask_patch_px", type=click.IntRange(4), default=None,
              help="SimMIM mask patch in pixels [default: min(32, tile/4)].")
@_budget_options
def pretrain_command(images, labels, output, **kw):
    """Pre-train a segmentation network on pseudo-labels and/or by masked image modelling.

    \b
    Example:
      $ geoalps label a.tif --engine classical --raster-out a.labels.tif -o a.gpkg
      $ geoalps pretrain --images a.tif --labels a.labels.tif -o pretrained.pt --model swin_t
    Many scenes: a folder's label rasters pair with its scenes by name:
      $ mkdir labels && geoalps label scenes/ --engine classical --raster-out labels/ -o all.gpkg
      $ geoalps pretrain --images scenes/ --labels labels/ -o pretrained.pt
    Writes OUTPUT, OUTPUT's .metrics.csv (one row per epoch) and, while running, .last.pt.
    """
    from geoalps.train.loop import pretrain

    _check_outputs([*_input_files(images, labels), kw.get("init")], output)
    quiet = kw["quiet"]
    options = _train_options(kw)
    history = pretrain(list(images), list(labels) or None, output, options=options, **kw)
    _done(output, history, quiet)


pretrain_command.help = inspect.cleandoc(pretrain_command.help) + "\n\n" + DATA_PARALLEL_HELP


@main.command("train", cls=_ListOptionsCommand)
@click.option("--images", multiple=True, required=True, type=click.Path(), help=IMAGES_HELP)
@click.option("--labels", multiple=True, required=True, type=click.Path(),
              help="Ground truth: class rasters on the scene grid, or vector layers (GPKG, GeoJSON, ...); one per scene, "
                   "in order (files or glob patterns), or ONE folder paired with the scenes by name " + LABEL_FOLDER_HELP)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model to write (.pt).")
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint from 'geoalps pretrain' to start from (backbone and decoder; classifier if class counts agree).")
@click.option("--backbone-weights", type=click.Path(dir_okay=False), default=None,
              help="timm Swin weights to start from when there is no --init.")
@click.option("--label-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Share of the labelled area training may see, as tile-sized cells scattered at seeded places: the few-label case.")
@click.option("--label-column", default=None, help="Vector labels: integer class column (>= 1; 0 is background). Default: all 1.")
@click.option("--class-names", default=None,
              help="Comma-separated names of class ids 0..K-1 [default: the label raster's CLASS_NAMES tag].")
@_budget_options
def train_command(images, labels, output, class_names, **kw):
    """Train (fine-tune) a segmentation network on ground-truth labels.

    \b
    Example:
      $ geoalps train --images a.tif --labels a.gt.tif --init pretrained.pt -o model.pt --label-fraction 0.1
    Writes OUTPUT and OUTPUT's .metrics.csv; --resume continues an interrupted run.
    """
    from geoalps.train.loop import finetune

    _check_outputs([*_input_files(images, labels), kw.get("init"), kw.get("backbone_weights")], output)
    quiet = kw["quiet"]
    options = _train_options(kw)
    names = [n.strip() for n in class_names.split(",")] if class_names else None
    history = finetune(list(images), list(labels), output, class_names=names, options=options, **kw)
    _done(output, history, quiet)


train_command.help = inspect.cleandoc(train_command.help) + "\n\n" + DATA_PARALLEL_HELP


def _input_files(images: tuple[str, ...], labels: tuple[str, ...]) -> list[str]:
    """The files --images and --labels name, folders and glob patterns expanded as training
    expands them (a label folder: its raster and vector files), for :func:`_check_outputs`."""
    import os
    from pathlib import Path

    from geoalps.inputs.sources import IMAGE_SUFFIXES, expand_glob, expand_scene_paths
    from geoalps.outputs.formats import VECTOR_SUFFIXES

    files = expand_scene_paths(images)
    for label in labels:
        if os.path.isdir(label):
            files.extend(str(p) for p in Path(label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES + VECTOR_SUFFIXES)
        else:
            files.extend(expand_glob(label))
    return files


def _check_outputs(inputs: list, output: str) -> None:
    """The model and its metrics file are not any of the images, labels or starting weights."""
    from pathlib import Path

    from geoalps.files import check_distinct

    from geoalps.train.checkpoint import resume_path

    files = [Path(output), Path(output).with_name(f"{Path(output).stem}.metrics.csv"), resume_path(output)]
    check_distinct(inputs, [(output, files)])


@main.command("predict")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("scene", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Class raster to write (GeoTIFF, scene grid).")
@click.option("--polygons", type=click.Path(dir_okay=False), default=None, help="Also write the classes as polygons (GeoPackage).")
@click.option("--overlap", "overlap_px", type=click.IntRange(0), default=None,
              help="Tile overlap in pixels, 0 to half the tile (the tile rule of label) [default: tile/4].")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True,
              help="torch: MODEL is a .pt from 'geoalps train'; onnx: MODEL is a .onnx from 'geoalps export', run by "
                   "onnxruntime on the CPU without torch.")
@device_opt
@threads_opt
@overwrite_opt
@quiet_opt
@progress_lines_opt
def predict_command(model, scene, output, polygons, overlap_px, batch_size, backend, device, threads, overwrite, quiet,
                    progress_lines):
    """Predict classes for SCENE with MODEL: a raster on the scene's exact grid.

    \b
    Example:
      $ geoalps predict model.pt scene.tif -o scene.pred.tif --polygons scene.pred.gpkg
      $ geoalps export model.pt -o model.onnx
      $ geoalps predict model.onnx scene.tif -o scene.pred.tif --backend onnx
    Under 'torchrun --nproc-per-node N -m geoalps predict ...' (torch backend) the N processes share
    the scene's windows; the first writes the same raster as one process.
    """
    from geoalps.files import check_distinct
    from geoalps.outputs.formats import check_raster_output, output_files, raster_output_files
    from geoalps.train.predict import predict

    check_raster_output(output)
    check_distinct([model, scene], [(output, raster_output_files(output))]
                   + ([(polygons, output_files(polygons))] if polygons else []))
    predict(model, scene, output, polygons=polygons, overwrite=overwrite, overlap_px=overlap_px, batch_size=batch_size,
            device=device, threads=threads, progress_lines=progress_lines, quiet=quiet, backend=backend)
    from geoalps.train.distributed import is_main_process

    if not quiet and is_main_process():
        click.echo(f"geoalps: wrote {output}" + (f" and {polygons}" if polygons else ""), err=True)
