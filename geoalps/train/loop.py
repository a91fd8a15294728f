"""Training: ``pretrain`` (pseudo-labels and/or SimMIM) and ``finetune`` (ground truth, few labels).

Both run the same loop: random tiles from the training region, AdamW with warm-up and cosine
decay, validation on the held-out strip each epoch, a CSV row per epoch (and TensorBoard when
installed), and a resume file ``<output>.last.pt`` written after every epoch and removed once the
final model is written. The GPU is used when present, with bf16 (or fp16 + loss scaling)
autocast and channels-last tensors; on CPU everything runs in float32.

The loop is a few named steps, as torchgeo's trainers are: ``_set_up`` (device, network,
optimiser, generators), ``_resume``, ``_train_epoch`` (``_train_step`` per batch, ``_losses`` per
objective), ``_validate``, ``_log_epoch``, ``_save_resume`` and ``_save_model``, strung together in
``_fit``; ``_Run`` is the state they share.

Cost per step is one forward/backward of the network on ``batch_size`` tiles (two with
``objective='both'``: a clean pass for the pseudo-labels and a masked pass for SimMIM).
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoalps.devices import autocast_dtype
from geoalps.errors import ModelError, OptionError
from geoalps.files import atomic_path, check_writable
from geoalps.inputs.remote import display_name
from geoalps.train.options import (MODEL_SIZE_CHOICES, OBJECTIVE_CHOICES, TrainOptions,  # noqa: F401 - re-exported
                                   check_choice)

if TYPE_CHECKING:  # annotations only: torch and the data modules load when a run starts
    from geoalps.train.data import Regions, TrainingData
    from geoalps.train.distributed import Ranks
    from geoalps.train.mim import SimMIMHead
    from geoalps.train.models import SegmentationNet

OBJECTIVES = OBJECTIVE_CHOICES

CSV_COLUMNS = (
    "epoch", "train_loss", "train_seg_loss", "train_mim_loss", "val_seg_loss", "val_miou",
    "val_accuracy", "val_mim_loss", "lr", "images_per_s", "seconds",
)


def default_class_colours(n: int) -> list[tuple[int, int, int]]:
    """Distinct colours for ``n`` classes: geoalps.outputs.style's palette (the one the label rasters use)."""
    from geoalps.outputs.style import class_colors

    return [tuple(c) for c in class_colors(n)]


@dataclass
class _Job:
    """Everything one training run needs; built by ``pretrain``/``finetune``, consumed by ``_fit``."""

    kind: str
    objective: str
    data: TrainingData
    regions: Regions
    arch: dict[str, Any]
    model: SegmentationNet
    mim_head: SimMIMHead | None
    norm: dict[str, list[float]]
    classes: dict[str, list]
    output: Path
    options: TrainOptions
    ranks: Ranks | None = None
    mask_ratio: float = 0.6
    mask_patch_px: int = 32
    provenance: dict[str, Any] = field(default_factory=dict)


def pretrain(
    images: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike] | None,
    output: str | os.PathLike,
    objective: str = "pseudo",
    size: str = "swin_t",
    tile_size_px: int | None = None,
    backbone_weights: str | os.PathLike | None = None,
    mask_ratio: float = 0.6,
    mask_patch_px: int | None = None,
    ignore_value: int | None = None,
    overwrite: bool = False,
    options: TrainOptions | None = None,
) -> list[dict[str, Any]]:
    """Pre-train a segmentation net on pseudo-labels (ALPS), SimMIM, or both; write a checkpoint.

    Args:
        images: scene rasters (same band count).
        labels: pseudo-label rasters from ``geoalps label --raster-out``, one per image on its
            grid (not needed for ``objective='mim'``).
        output: checkpoint path (``.pt``).
        objective: "pseudo" (cross-entropy on pseudo-classes), "mim" (SimMIM), "both" (sum).
        size: model size name (swin_t, swin_s, swin_b, tiny).
        tile_size_px: input tile size (default per size; multiple of 32).
        backbone_weights: optional timm Swin checkpoint to start from (first conv adapted).
        mask_ratio: share of mask patches hidden for SimMIM.
        mask_patch_px: SimMIM mask patch size (default min(32, tile/4)).
        ignore_value: label value to skip besides the label nodata.
        overwrite: replace an existing ``output``.
        options: budget, device, resume, progress.

    Returns:
        the per-epoch history (as written to ``<output stem>.metrics.csv``).
    """
    from geoalps.train import data as gdata
    from geoalps.train.mim import SimMIMHead
    from geoalps.train.models import build_model, make_arch

    options = (options or TrainOptions()).validated()
    check_choice("--objective", objective, OBJECTIVE_CHOICES)
    check_choice("--model", size, MODEL_SIZE_CHOICES)
    output = _check_output(output, overwrite)
    ranks = _start(options)
    if objective != "mim" and not labels:
        raise OptionError(f"--objective {objective} needs --labels (pseudo-label rasters from 'geoalps label --raster-out')")
    data = gdata.open_training_data(images, labels if objective != "mim" else None, ignore_value=ignore_value)
    arch = make_arch(size, data.scenes[0].count, data.n_classes, tile_size_px)
    tile = arch["tile_size_px"]
    mask_patch_px = int(mask_patch_px or min(32, tile // 4))
    if mask_patch_px % arch["patch_size"] or tile % mask_patch_px:
        raise OptionError(f"--mask-patch {mask_patch_px} must divide the tile ({tile}) and be a multiple of {arch['patch_size']}")
    regions = gdata.split_regions(data, tile, options.val_fraction, 1.0, options.seed)
    _seed_everything(options.seed)
    model = build_model(arch, backbone_weights)
    mim_head = SimMIMHead(model.backbone.channels[-1], arch["in_chans"], arch["reduction"]) if objective != "pseudo" else None
    names = [f"pseudo {k}" for k in range(data.n_classes)]
    job = _Job(
        kind="pretrain",
        objective=objective,
        data=data,
        regions=regions,
        arch=arch,
        model=model,
        mim_head=mim_head,
        norm=_band_norm(data),
        classes={"names": names, "colours": _class_colours(data)},
        output=output,
        options=options,
        ranks=ranks,
        mask_ratio=mask_ratio,
        mask_patch_px=mask_patch_px,
        provenance={"backbone_weights": None if backbone_weights is None else str(backbone_weights)},
    )
    return _fit(job)


def finetune(
    images: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    init: str | os.PathLike | None = None,
    size: str = "swin_t",
    tile_size_px: int | None = None,
    backbone_weights: str | os.PathLike | None = None,
    label_fraction: float = 1.0,
    label_column: str | None = None,
    ignore_value: int | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
    options: TrainOptions | None = None,
) -> list[dict[str, Any]]:
    """Train on ground truth, from a pre-trained checkpoint (``init``) or from scratch.

    With ``init`` the backbone and decoder are loaded, the classifier too when the class counts
    agree (otherwise it is re-initialised), and the init's band normalisation is kept so the
    backbone sees inputs as in pre-training; ``size`` is then taken from the init.

    Args:
        images: scene rasters.
        labels: ground truth per image: class rasters on the image grid, or vector layers.
        output: checkpoint path.
        init: checkpoint from ``pretrain`` (or ``train``) to start from.
        size: model size when there is no init.
        tile_size_px: tile size (default: the init's, else the size's default).
        backbone_weights: timm Swin weights when there is no init.
        label_fraction: share of the labelled area training may see (scattered tile cells; see data.split_regions).
        label_column: class id attribute of vector labels (polygons without it are class 1).
        ignore_value: label value to skip besides the label nodata.
        class_names: one name per class id (default: the label raster's CLASS_NAMES tag).
        overwrite: replace an existing ``output``.
        options: budget, device, resume, progress.

    Returns:
        the per-epoch history.
    """
    from geoalps.train import data as gdata
    from geoalps.train.models import build_model, make_arch

    options = (options or TrainOptions()).validated()
    check_choice("--model", size, MODEL_SIZE_CHOICES)
    output = _check_output(output, overwrite)
    ranks = _start(options)
    if not labels:
        raise OptionError("train needs --labels (ground truth rasters or vector layers)")
    data = gdata.open_training_data(images, labels, label_column=label_column, ignore_value=ignore_value)
    if class_names is not None and len(class_names) != data.n_classes:
        raise OptionError(f"{len(class_names)} class names for {data.n_classes} classes (ids 0..{data.n_classes - 1})")
    names = list(class_names or data.class_names or [f"class {k}" for k in range(data.n_classes)])
    start = _init_checkpoint(init, backbone_weights, data) if init else None
    if start is not None:
        size = start["arch"]["size"]
        tile_size_px = tile_size_px or start["tile_size_px"]
    arch = make_arch(size, data.scenes[0].count, data.n_classes, tile_size_px)
    regions = gdata.split_regions(data, arch["tile_size_px"], options.val_fraction, label_fraction, options.seed)
    _seed_everything(options.seed)
    model = build_model(arch, None if start is not None else backbone_weights)
    norm = _load_init(model, start, init, data.n_classes) if start is not None else _band_norm(data)
    job = _Job(
        kind="train",
        objective="pseudo",
        data=data,
        regions=regions,
        arch=arch,
        model=model,
        mim_head=None,
        norm=norm,
        classes={"names": names, "colours": _class_colours(data)},
        output=output,
        options=options,
        ranks=ranks,
        provenance={
            "init": None if init is None else str(init),
            "backbone_weights": None if backbone_weights is None else str(backbone_weights),
            "label_fraction": label_fraction,
            "label_column": label_column,
        },
    )
    return _fit(job)


def _start(options: TrainOptions) -> Any:
    """The run's processes and device (:func:`geoalps.train.distributed.start`); a data-parallel
    run's first line says how many processes, which backend and device."""
    from geoalps.train import distributed

    ranks = distributed.start(options.device, options.timeout_s)
    if ranks.distributed and ranks.main and not options.quiet:
        import click

        click.echo(ranks.describe(), err=True)
    return ranks


def _init_checkpoint(init: str | os.PathLike, backbone_weights: Any, data: Any) -> dict[str, Any]:
    """The ``--init`` checkpoint, checked against the training scenes' band count."""
    from geoalps.train.checkpoint import load_checkpoint

    if backbone_weights:
        raise OptionError("give --init or --backbone-weights, not both")
    start = load_checkpoint(init)
    bands = data.scenes[0].count
    if start["arch"]["in_chans"] != bands:
        raise ModelError(f"{init}: made for {start['arch']['in_chans']} bands, but {data.scenes[0].shown} has {bands}")
    return start


def _load_init(model: Any, start: dict[str, Any], init: str | os.PathLike, n_classes: int) -> dict[str, list[float]]:
    """Load the init's backbone and decoder (and classifier when the class counts agree) into
    ``model``; return the init's band normalisation, kept so the backbone sees inputs as before."""
    from geoalps.train.models import load_weights

    missing = load_weights(model, start["model"], keep_classifier=start["arch"]["num_classes"] == n_classes)
    stray = [k for k in missing if not k.startswith("classifier.")]
    if stray:
        raise ModelError(f"{init}: weights do not fit a {start['arch']['size']} net ({len(stray)} tensors, e.g. {stray[0]})")
    return start["norm"]


def _band_norm(data: Any) -> dict[str, list[float]]:
    from geoalps.train.data import band_statistics

    mean, std = band_statistics(data.scenes)
    return {"mean": mean, "std": std}


def _class_colours(data: Any) -> list[list[int]]:
    """One RGB colour per class: the label rasters' colour tables, the default palette elsewhere."""
    palette = default_class_colours(data.n_classes)
    return [list(data.colours.get(k, palette[k])) for k in range(data.n_classes)]


# --------------------------------------------------------------------------- the loop


def _check_output(output: str | os.PathLike, overwrite: bool) -> Path:
    output = Path(output)
    check_writable(output, overwrite)
    return output


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _param_groups(modules: Sequence[Any], weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices and kernels only (not norms, biases, tables, mask token)."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            if p.ndim < 2 or "relative_position_bias_table" in name or "mask_token" in name:
                no_decay.append(p)
            else:
                decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_lambda(total_steps: int, warmup_fraction: float):
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@dataclass
class _Run:
    """The live state of one training run: built by ``_set_up``, restored by ``_resume``, advanced
    by each epoch and saved by ``_save_resume`` / ``_save_model``."""

    job: _Job
    device: Any
    amp_dtype: Any
    model: Any
    modules: list[Any]
    optimizer: Any
    scheduler: Any
    scaler: Any
    sample_gen: Any
    aug_gen: Any
    mask_gen: Any
    prep: Any
    workers: int
    band_descriptions: tuple[str | None, ...]
    net: Any = None
    loader: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0

    @property
    def ranks(self) -> Any:
        return self.job.ranks

    @property
    def options(self) -> TrainOptions:
        return self.job.options

    @property
    def tile(self) -> int:
        return self.job.arch["tile_size_px"]

    @property
    def seg(self) -> bool:
        """The objective has a segmentation loss (pseudo-labels or ground truth)."""
        return self.job.objective in ("pseudo", "both")

    @property
    def mim(self) -> bool:
        """The objective has a SimMIM loss."""
        return self.job.mim_head is not None

    @property
    def generators(self) -> tuple[Any, Any, Any]:
        """The run's own random streams: tiles, augmentation, SimMIM masks."""
        return self.sample_gen, self.aug_gen, self.mask_gen

    @property
    def resume_file(self) -> Path:
        from geoalps.train.checkpoint import resume_path

        return resume_path(self.job.output)

    def autocast(self):
        """The autocast context of the run's precision; a no-op in float32."""
        import torch

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_mode(self, on: bool) -> None:
        for module in self.modules:
            module.train(on)

    @property
    def plain_net(self) -> Any:
        """The objectives module without its DistributedDataParallel wrapper (for validation,
        which each process runs on its own share, without gradient synchronisation)."""
        return getattr(self.net, "module", self.net)


def _objectives_module(model: Any, mim_head: Any, seg: bool) -> Any:
    """One module computing every objective's outputs, so DistributedDataParallel sees a single
    forward and backward per step: ``forward(x, token_mask)`` -> (segmentation logits or None,
    SimMIM reconstruction or None); the reconstruction needs a mask (patch-token resolution)."""
    from torch import nn

    class Objectives(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.mim_head = mim_head
            self.seg = seg

        def forward(self, x, token_mask=None):
            logits = self.model(x) if self.seg else None
            recon = None
            if token_mask is not None:
                recon = self.mim_head(self.model.backbone(x, token_mask)[-1])
            return logits, recon

    return Objectives()


def _fit(job: _Job) -> list[dict[str, Any]]:
    """Set up, resume, then per epoch train, validate, log and save the resume file; save the model."""
    from geoalps.progress import Progress
    from geoalps.train import data as gdata
    from geoalps.train import distributed

    run = _set_up(job)
    _resume(run)
    opt, main = job.options, job.ranks.main
    val = gdata.val_loader(job.data, job.regions, run.tile, opt.batch_size, run.workers, ranks=job.ranks)
    writer = _tensorboard(job.output) if main else None
    progress = Progress(opt.epochs * opt.steps_per_epoch, desc=job.kind, lines=opt.progress_lines,
                        enabled=main and not opt.quiet, done=run.start_epoch * opt.steps_per_epoch, leave=False)
    try:
        for epoch in range(run.start_epoch, opt.epochs):
            row = _train_epoch(run, epoch, progress)
            row.update(_validate(run, val))
            _log_epoch(run, row, writer, progress)
            _save_resume(run, epochs_done=epoch + 1)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    _save_model(run)
    distributed.finish(job.ranks)
    return run.history


def _set_up(job: _Job) -> _Run:
    """Device and precision, the network on the device, AdamW with warm-up and cosine decay, the
    fp16 loss scaler, seeded generators (tiles, augmentation, masks) and batch preparation."""
    import torch

    from geoalps.train import data as gdata

    from geoalps.train import distributed

    opt, ranks = job.options, job.ranks
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = ranks.device
    amp_dtype = autocast_dtype(device, opt.precision)
    channels_last = device.type == "cuda"
    workers = opt.workers if opt.workers is not None else (0 if device.type == "cpu" else min(4, os.cpu_count() or 1))
    model = job.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    modules = [model] + ([job.mim_head.to(device)] if job.mim_head is not None else [])
    optimizer = torch.optim.AdamW(_param_groups(modules, opt.weight_decay), lr=opt.lr)
    schedule = _lr_lambda(opt.epochs * opt.steps_per_epoch, opt.warmup_fraction)
    prep = gdata.BatchPrep(
        job.norm["mean"], job.norm["std"], job.data.scenes[0].nodata, job.data.label_nodata, job.data.ignore_value,
        job.arch["num_classes"], device, channels_last,
    )
    seg = job.objective in ("pseudo", "both")
    # Some parameters get no gradient (timm's unused classifier head; SimMIM's mask token without
    # MIM; the decoder with MIM alone): DDP must look for them each step.
    net = distributed.wrap(_objectives_module(model, job.mim_head, seg), ranks, find_unused=True)
    sample_gen = torch.Generator().manual_seed(distributed.rank_seed(opt.seed, 0, ranks.rank))
    # Built once per run: each epoch iterates it again, the sampler drawing on from sample_gen.
    loader = gdata.train_loader(job.data, job.regions, job.arch["tile_size_px"], opt.batch_size, opt.steps_per_epoch,
                                workers, sample_gen, device.type == "cuda")
    return _Run(
        job=job, device=device, amp_dtype=amp_dtype, model=model, modules=modules, optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        sample_gen=sample_gen,
        aug_gen=torch.Generator().manual_seed(distributed.rank_seed(opt.seed, 1, ranks.rank)),
        mask_gen=torch.Generator().manual_seed(distributed.rank_seed(opt.seed, 2, ranks.rank)),
        prep=prep, workers=workers, band_descriptions=gdata.band_descriptions(job.data.scenes[0]),
        net=net, loader=loader,
    )


def _resume(run: _Run) -> None:
    """With ``--resume`` and a ``<output>.last.pt``, restore weights, optimiser, scheduler, scaler,
    RNG states and history; without, seed the global RNG so both kinds of run draw alike."""
    import torch

    from geoalps.train.checkpoint import load_checkpoint

    from geoalps.train import distributed

    last, ranks = run.resume_file, run.ranks
    if not (run.options.resume and last.exists()):
        # Same global RNG stream from here on whether or not weights were loaded (fair A/B runs).
        torch.manual_seed(distributed.rank_seed(run.options.seed, 3, ranks.rank))
        return
    state = load_checkpoint(last)
    if state.get("arch") != run.job.arch or "resume" not in state:
        raise ModelError(f"{last}: resume file is for another model; delete it or drop --resume")
    run.model.load_state_dict(state["model"])
    if run.mim:
        run.job.mim_head.load_state_dict(state["mim_head"])
    saved = state["resume"]
    for part, key in ((run.optimizer, "optimizer"), (run.scheduler, "scheduler"), (run.scaler, "scaler")):
        part.load_state_dict(saved[key])
    run.start_epoch, run.history = saved["epoch"], state["training"]["history"]
    # Each process continues its own random streams; a process the saved run did not have (more
    # processes than before) starts fresh streams seeded from (seed, rank, epoch).
    streams = saved.get("rank_rngs") or [{k: saved[k] for k in _RNG_KEYS}]
    if ranks.rank < len(streams):
        for gen, key in zip(run.generators, _RNG_KEYS[:3]):
            gen.set_state(streams[ranks.rank][key])
        torch.set_rng_state(streams[ranks.rank]["torch_rng"])
    else:
        for stream, gen in enumerate([*run.generators, torch.default_generator]):
            gen.manual_seed(distributed.rank_seed(run.options.seed + 5 * run.start_epoch, stream, ranks.rank))


_RNG_KEYS = ("sample_rng", "aug_rng", "mask_rng", "torch_rng")


def _losses(run: _Run, x, y, valid, mask_generator, net=None) -> dict[str, Any]:
    """The objective's loss terms for one batch (``seg``: cross-entropy, ``mim``: SimMIM L1 on
    masked pixels), plus the segmentation logits as ``_logits`` for validation scores."""
    import torch.nn.functional as F

    from geoalps.train.data import IGNORE_INDEX
    from geoalps.train.mim import masked_reconstruction_loss, random_patch_mask, upsample_mask

    job, out = run.job, {}
    with run.autocast():
        mask = token_mask = None
        if run.mim:
            patch = job.mask_patch_px
            mask = random_patch_mask(x.shape[0], run.tile, patch, job.mask_ratio, mask_generator).to(run.device)
            token_mask = upsample_mask(mask, patch // job.arch["patch_size"])
        logits, recon = (net or run.net)(x, token_mask)
        if run.seg:
            logits = logits.float()
            if (y != IGNORE_INDEX).any():
                out["seg"] = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
            else:
                out["seg"] = logits.sum() * 0.0
            out["_logits"] = logits
        if run.mim:
            out["mim"] = masked_reconstruction_loss(recon.float(), x.float(), upsample_mask(mask, job.mask_patch_px), valid)
    return out


def _train_epoch(run: _Run, epoch: int, progress) -> dict[str, Any]:
    """``steps_per_epoch`` steps on fresh random tiles; the epoch's row (losses, lr, speed) so far.

    Data-parallel: losses are averaged over the processes, images per second is the sum of
    theirs (tiles of all processes over the slowest one's time)."""
    from geoalps.train import distributed

    opt, ranks = run.options, run.ranks
    run.train_mode(True)
    sums = {"loss": 0.0, "seg": 0.0, "mim": 0.0}
    steps, started = 0, time.perf_counter()
    for batch in run.loader:
        loss, parts = _train_step(run, batch, epoch)
        steps += 1
        sums["loss"] += loss
        for k, v in parts.items():
            sums[k] += v
        rate = steps * opt.batch_size * ranks.world_size / max(time.perf_counter() - started, 1e-9)
        progress.update(1, message=f"epoch {epoch + 1}/{opt.epochs}", loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
    seconds = distributed.max_over_ranks(ranks, time.perf_counter() - started)
    total = distributed.sum_over_ranks(ranks, [sums["loss"], sums["seg"], sums["mim"], steps])
    loss_sum, seg_sum, mim_sum, all_steps = (float(v) for v in total)
    n = max(all_steps, 1)
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / n,
        "train_seg_loss": seg_sum / n if run.seg else "",
        "train_mim_loss": mim_sum / n if run.mim else "",
        "lr": run.scheduler.get_last_lr()[0],
        "images_per_s": all_steps * opt.batch_size / max(seconds, 1e-9),
        "seconds": seconds,
    }


def _train_step(run: _Run, batch: dict[str, Any], epoch: int) -> tuple[float, dict[str, float]]:
    """One optimiser step: :func:`_backward`, then the optimiser and the schedule.

    Returns this process's loss and its terms as floats."""
    loss, parts = _backward(run, batch, epoch)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss, parts


def _backward(run: _Run, batch: dict[str, Any], epoch: int = 0) -> tuple[float, dict[str, float]]:
    """Prepare (and augment) the batch, forward, backward: the parameters' ``.grad`` then hold
    the gradient of this process's loss, averaged over the processes of a data-parallel run."""
    import torch

    from geoalps.train import data as gdata
    from geoalps.train import distributed

    x, y, valid = run.prep(batch)
    if run.options.augment:
        x, y, valid = gdata.augment(x, y, valid, generator=run.aug_gen)
    with distributed.guard(run.ranks, f"training epoch {epoch + 1}"):
        parts = _losses(run, x, y, valid, run.mask_gen)
        parts.pop("_logits", None)
        loss = sum(parts.values())
        if not torch.isfinite(loss):
            raise OptionError(f"{run.job.output}: loss became {loss.item()} at epoch {epoch + 1}; lower --lr")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
    return loss.item(), {k: v.item() for k, v in parts.items()}


def _validate(run: _Run, loader) -> dict[str, Any]:
    """Loss, mIoU and accuracy on the validation strips (masks from a fixed seed each epoch).

    Data-parallel: each process scores its share of the validation tiles; confusion matrices and
    loss sums are added over the processes, so the scores are those of one process on all tiles."""
    import torch

    from geoalps.train import distributed
    from geoalps.train.data import IGNORE_INDEX
    from geoalps.train.metrics import confusion_matrix, scores

    if loader is None:
        return {}
    run.train_mode(False)
    n = max(run.job.arch["num_classes"], 1)
    confusion = np.zeros((n, n + 1), dtype=np.int64)
    sums, batches = {"seg": 0.0, "mim": 0.0}, 0
    mask_gen = torch.Generator().manual_seed(distributed.rank_seed(run.options.seed, 4, run.ranks.rank))
    with torch.no_grad():
        for batch in loader:
            x, y, valid = run.prep(batch)
            parts = _losses(run, x, y, valid, mask_gen, net=run.plain_net)
            batches += 1
            for k in ("seg", "mim"):
                if k in parts:
                    sums[k] += parts[k].item()
            if run.seg:
                pred = parts["_logits"].argmax(1).cpu().numpy()
                confusion += confusion_matrix(pred, y.cpu().numpy(), run.job.arch["num_classes"], ignore=IGNORE_INDEX)
    if run.ranks.distributed:
        confusion = distributed.sum_over_ranks(run.ranks, confusion).astype(np.int64)
        sums["seg"], sums["mim"], batches = (float(v) for v in distributed.sum_over_ranks(
            run.ranks, [sums["seg"], sums["mim"], batches]))
    out: dict[str, Any] = {}
    if run.seg:
        s = scores(confusion)
        out.update(val_seg_loss=sums["seg"] / max(batches, 1), val_miou=s["miou"], val_accuracy=s["overall_accuracy"])
    if run.mim:
        out["val_mim_loss"] = sums["mim"] / max(batches, 1)
    return out


def _log_epoch(run: _Run, row: dict[str, Any], writer, progress) -> None:
    """Add ``row`` to the history and the metrics CSV (and TensorBoard); print the epoch line.
    Only the first process writes (every process keeps the history)."""
    run.history.append({k: row.get(k, "") for k in CSV_COLUMNS})
    if not run.ranks.main:
        return
    _write_csv(run.job.output.with_name(f"{run.job.output.stem}.metrics.csv"), run.history)
    if writer is not None:
        for k, v in row.items():
            if isinstance(v, float):
                writer.add_scalar(k, v, row["epoch"])
    progress.write(_epoch_line(row, run.options.epochs))


def _save_resume(run: _Run, epochs_done: int) -> None:
    """``<output>.last.pt``: the model so far plus optimiser, scheduler, scaler and RNG states
    (every process's, gathered; written by the first process)."""
    import torch

    from geoalps.train import distributed
    from geoalps.train.checkpoint import save_checkpoint

    mine = dict(zip(_RNG_KEYS, [*(g.get_state() for g in run.generators), torch.get_rng_state()]))
    streams = distributed.gather(run.ranks, mine)
    if not run.ranks.main:
        return
    resume = {
        "epoch": epochs_done,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        **streams[0],
        "world_size": run.ranks.world_size,
        "rank_rngs": streams,
    }
    save_checkpoint(_payload(run, resume), run.resume_file)


def _save_model(run: _Run) -> None:
    """The final checkpoint at ``output``; the resume file is removed once it is written.
    Written by the first process only."""
    from geoalps.train.checkpoint import save_checkpoint

    if not run.ranks.main:
        return
    save_checkpoint(_payload(run, None), run.job.output, overwrite=True)
    if run.resume_file.exists():
        run.resume_file.unlink()


def _payload(run: _Run, resume: dict[str, Any] | None) -> dict[str, Any]:
    job, scene = run.job, run.job.data.scenes[0]
    payload = {
        "kind": job.kind,
        "arch": job.arch,
        "bands": {"count": scene.count, "descriptions": list(run.band_descriptions), "dtype": scene.dtype,
                  "nodata": scene.nodata},
        "norm": job.norm,
        "classes": job.classes,
        "tile_size_px": job.arch["tile_size_px"],
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "training": {
            "objective": job.objective,
            # as messages name them: never a STAC item's VRT XML or a signed URL's credentials
            "images": [s.shown for s in job.data.scenes],
            "labels": [display_name(i.path) for i in job.data.labels],
            "regions": job.regions.to_dict(),
            "options": job.options.as_dict(),
            "processes": job.ranks.world_size,
            "mask_ratio": job.mask_ratio,
            "mask_patch_px": job.mask_patch_px,
            "history": run.history,
            **job.provenance,
        },
    }
    if job.mim_head is not None:
        payload["mim_head"] = {k: v.detach().cpu() for k, v in job.mim_head.state_dict().items()}
    if resume is not None:
        payload["resume"] = resume
    return payload


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole CSV each epoch (small), so a resumed run keeps one consistent file."""
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in history:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if isinstance(row.get("val_miou"), float):
        parts.append(f"val mIoU {row['val_miou']:.3f}")
    if isinstance(row.get("val_mim_loss"), float):
        parts.append(f"val MIM {row['val_mim_loss']:.4f}")
    parts.append(f"{row['images_per_s']:.1f} img/s")
    return "  ".join(parts)


def _tensorboard(output: Path):
    """A SummaryWriter in ``<output stem>.tb/`` when tensorboard is installed, else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(output.with_name(f"{output.stem}.tb")))

