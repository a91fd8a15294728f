"""Training: ``pretrain`` (pseudo-labels and/or SimMIM) and ``finetune`` (ground truth, few labels).

Both run the same loop: random tiles from the training region, AdamW with warm-up and cosine
decay, validation on the held-out strip each epoch, a CSV row per epoch (and TensorBoard when
installed), and a resume file ``<output>.last.pt`` written after every epoch and removed once the
final model is written. The GPU is used when present, with bf16 (or fp16 + loss scaling)
autocast and channels-last tensors; on CPU everything runs in float32.

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
from typing import Any

import numpy as np

from geoalps.devices import autocast_dtype, resolve_device
from geoalps.errors import GeoAlpsError

OBJECTIVES = ("pseudo", "mim", "both")
CSV_COLUMNS = (
    "epoch", "train_loss", "train_seg_loss", "train_mim_loss", "val_seg_loss", "val_miou",
    "val_accuracy", "val_mim_loss", "lr", "images_per_s", "seconds",
)


@dataclass
class TrainOptions:
    """Budget and machinery shared by pre-training and fine-tuning.

    Args:
        epochs: passes of ``steps_per_epoch`` batches each.
        steps_per_epoch: batches per epoch (tiles are drawn at random, so an epoch is a budget).
        batch_size: tiles per batch.
        lr: peak AdamW learning rate (after a linear warm-up over ``warmup_fraction`` of steps).
        weight_decay: AdamW decay on weight matrices (not on norms, biases, position tables).
        val_fraction: share of each labelled area's rows held out for validation.
        seed: seeds tile sampling, augmentation, masks and initialisation.
        device: "auto" (cuda, then mps, then cpu) or a torch device string.
        precision: "auto" (bf16 or fp16 on CUDA, fp32 elsewhere), "32", "bf16" or "fp16".
        workers: DataLoader worker processes (None: 0 on CPU, up to 4 on GPU).
        threads: torch CPU threads (None: torch's default). On a busy machine 1 can be several
            times faster than 2, as intra-op threads wait for each other's time slices.
        augment: random flips and quarter turns.
        resume: continue from ``<output>.last.pt`` if it exists.
        progress_lines: ``geoalps-progress:`` lines on stderr instead of a bar.
        quiet: no progress and no per-epoch lines.
    """

    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    threads: int | None = None
    augment: bool = True
    resume: bool = False
    progress_lines: bool = False
    quiet: bool = False


def default_class_colours(n: int) -> list[tuple[int, int, int]]:
    """Distinct colours for ``n`` classes: geoalps.outputs.style's palette when present, else golden-ratio hues."""
    try:
        from geoalps.outputs.style import class_colors

        return [tuple(c) for c in class_colors(n)]
    except ImportError:
        import colorsys

        return [tuple(int(255 * v) for v in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.65, 0.95)) for i in range(n)]


@dataclass
class _Job:
    """Everything one training run needs; built by ``pretrain``/``finetune``, consumed by ``_fit``."""

    kind: str
    objective: str
    data: Any
    regions: Any
    arch: dict[str, Any]
    model: Any
    mim_head: Any
    norm: dict[str, list[float]]
    classes: dict[str, list]
    output: Path
    options: TrainOptions
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

    options = options or TrainOptions()
    if objective not in OBJECTIVES:
        raise GeoAlpsError(f"unknown --objective {objective!r}; use {', '.join(OBJECTIVES)}")
    output = _check_output(output, overwrite)
    if objective != "mim" and not labels:
        raise GeoAlpsError(f"--objective {objective} needs --labels (pseudo-label rasters from 'geoalps label --raster-out')")
    data = gdata.open_training_data(images, labels if objective != "mim" else None, ignore_value=ignore_value)
    arch = make_arch(size, data.scenes[0].count, data.n_classes, tile_size_px)
    tile = arch["tile_size_px"]
    mask_patch_px = int(mask_patch_px or min(32, tile // 4))
    if mask_patch_px % arch["patch_size"] or tile % mask_patch_px:
        raise GeoAlpsError(f"--mask-patch {mask_patch_px} must divide the tile ({tile}) and be a multiple of {arch['patch_size']}")
    regions = gdata.split_regions(data, tile, options.val_fraction, 1.0, options.seed)
    _seed_everything(options.seed)
    model = build_model(arch, backbone_weights)
    mim_head = SimMIMHead(model.backbone.channels[-1], arch["in_chans"], arch["reduction"]) if objective != "pseudo" else None
    mean, std = gdata.band_statistics(data.scenes)
    names = [f"pseudo {k}" for k in range(data.n_classes)]
    palette = default_class_colours(data.n_classes)
    colours = [list(data.colours.get(k, palette[k])) for k in range(data.n_classes)]
    job = _Job(
        kind="pretrain",
        objective=objective,
        data=data,
        regions=regions,
        arch=arch,
        model=model,
        mim_head=mim_head,
        norm={"mean": mean, "std": std},
        classes={"names": names, "colours": colours},
        output=output,
        options=options,
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
    from geoalps.train.checkpoint import load_checkpoint
    from geoalps.train.models import build_model, load_weights, make_arch

    options = options or TrainOptions()
    output = _check_output(output, overwrite)
    if not labels:
        raise GeoAlpsError("train needs --labels (ground truth rasters or vector layers)")
    data = gdata.open_training_data(images, labels, label_column=label_column, ignore_value=ignore_value)
    bands = data.scenes[0].count
    start = load_checkpoint(init) if init else None
    if start is not None:
        if backbone_weights:
            raise GeoAlpsError("give --init or --backbone-weights, not both")
        if start["arch"]["in_chans"] != bands:
            raise GeoAlpsError(f"{init}: made for {start['arch']['in_chans']} bands, but {data.scenes[0].path} has {bands}")
        size = start["arch"]["size"]
        tile_size_px = tile_size_px or start["tile_size_px"]
    arch = make_arch(size, bands, data.n_classes, tile_size_px)
    regions = gdata.split_regions(data, arch["tile_size_px"], options.val_fraction, label_fraction, options.seed)
    _seed_everything(options.seed)
    model = build_model(arch, None if start is not None else backbone_weights)
    if start is not None:
        same_classes = start["arch"]["num_classes"] == data.n_classes
        missing = load_weights(model, start["model"], keep_classifier=same_classes)
        stray = [k for k in missing if not k.startswith("classifier.")]
        if stray:
            raise GeoAlpsError(f"{init}: weights do not fit a {size} net ({len(stray)} tensors, e.g. {stray[0]})")
        norm = start["norm"]
    else:
        mean, std = gdata.band_statistics(data.scenes)
        norm = {"mean": mean, "std": std}
    if class_names is not None and len(class_names) != data.n_classes:
        raise GeoAlpsError(f"{len(class_names)} class names for {data.n_classes} classes (ids 0..{data.n_classes - 1})")
    names = list(class_names or data.class_names or [f"class {k}" for k in range(data.n_classes)])
    palette = default_class_colours(data.n_classes)
    colours = [list(data.colours.get(k, palette[k])) for k in range(data.n_classes)]
    job = _Job(
        kind="train",
        objective="pseudo",
        data=data,
        regions=regions,
        arch=arch,
        model=model,
        mim_head=None,
        norm=norm,
        classes={"names": names, "colours": colours},
        output=output,
        options=options,
        provenance={
            "init": None if init is None else str(init),
            "backbone_weights": None if backbone_weights is None else str(backbone_weights),
            "label_fraction": label_fraction,
            "label_column": label_column,
        },
    )
    return _fit(job)


# --------------------------------------------------------------------------- the loop


def _check_output(output: str | os.PathLike, overwrite: bool) -> Path:
    from geoalps.outputs.vector import check_writable

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


def _fit(job: _Job) -> list[dict[str, Any]]:
    """Run the epochs of ``job``; write the resume file each epoch and the final checkpoint."""
    import torch
    import torch.nn.functional as F

    from geoalps.train import data as gdata
    from geoalps.train.checkpoint import load_checkpoint, resume_path, save_checkpoint
    from geoalps.train.mim import (
        masked_reconstruction_loss,
        random_patch_mask,
        upsample_mask,
    )
    from geoalps.train.progress import Progress

    opt = job.options
    if opt.threads:
        torch.set_num_threads(opt.threads)
    device = resolve_device(opt.device)
    amp_dtype = autocast_dtype(device, opt.precision)
    channels_last = device.type == "cuda"
    workers = opt.workers if opt.workers is not None else (0 if device.type == "cpu" else min(4, os.cpu_count() or 1))
    tile = job.arch["tile_size_px"]
    seg = job.objective in ("pseudo", "both")
    mim = job.mim_head is not None
    model = job.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    modules = [model] + ([job.mim_head.to(device)] if mim else [])
    optimizer = torch.optim.AdamW(_param_groups(modules, opt.weight_decay), lr=opt.lr)
    total_steps = opt.epochs * opt.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, opt.warmup_fraction))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    sample_gen = torch.Generator().manual_seed(opt.seed)
    aug_gen = torch.Generator().manual_seed(opt.seed + 1)
    mask_gen = torch.Generator().manual_seed(opt.seed + 2)
    prep = gdata.BatchPrep(
        job.norm["mean"], job.norm["std"], job.data.scenes[0].nodata, job.data.label_nodata, job.data.ignore_value,
        job.arch["num_classes"], job.data.res, device, channels_last,
    )

    history: list[dict[str, Any]] = []
    start_epoch = 0
    last = resume_path(job.output)
    if opt.resume and last.exists():
        state = load_checkpoint(last)
        if state.get("arch") != job.arch or "resume" not in state:
            raise GeoAlpsError(f"{last}: resume file is for another model; delete it or drop --resume")
        model.load_state_dict(state["model"])
        if mim:
            job.mim_head.load_state_dict(state["mim_head"])
        r = state["resume"]
        optimizer.load_state_dict(r["optimizer"])
        scheduler.load_state_dict(r["scheduler"])
        scaler.load_state_dict(r["scaler"])
        for gen, key in ((sample_gen, "sample_rng"), (aug_gen, "aug_rng"), (mask_gen, "mask_rng")):
            gen.set_state(r[key])
        torch.set_rng_state(r["torch_rng"])
        start_epoch = r["epoch"]
        history = state["training"]["history"]
    else:
        # Same global RNG stream from here on whether or not weights were loaded (fair A/B runs).
        torch.manual_seed(opt.seed + 3)

    val = gdata.val_loader(job.data, job.regions, tile, opt.batch_size, workers)
    writer = _tensorboard(job.output)
    metrics_csv = job.output.with_name(f"{job.output.stem}.metrics.csv")
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else contextlib.nullcontext

    def losses_for(x, y, valid, mask_generator) -> dict[str, Any]:
        out = {}
        with autocast():
            if seg:
                logits = model(x).float()
                if (y != gdata.IGNORE_INDEX).any():
                    out["seg"] = F.cross_entropy(logits, y, ignore_index=gdata.IGNORE_INDEX)
                else:
                    out["seg"] = logits.sum() * 0.0
                out["_logits"] = logits
            if mim:
                mp = job.mask_patch_px
                mask = random_patch_mask(x.shape[0], tile, mp, job.mask_ratio, mask_generator).to(device)
                maps = model.backbone(x, upsample_mask(mask, mp // job.arch["patch_size"]))
                recon = job.mim_head(maps[-1]).float()
                out["mim"] = masked_reconstruction_loss(recon, x.float(), upsample_mask(mask, mp), valid)
        return out

    progress = Progress(total_steps, desc=job.kind, lines=opt.progress_lines, enabled=not opt.quiet)
    progress.update(start_epoch * opt.steps_per_epoch)
    try:
        for epoch in range(start_epoch, opt.epochs):
            model.train()
            if mim:
                job.mim_head.train()
            loader = gdata.train_loader(
                job.data, job.regions, tile, opt.batch_size, opt.steps_per_epoch, workers, sample_gen, device.type == "cuda"
            )
            sums = {"loss": 0.0, "seg": 0.0, "mim": 0.0}
            t0 = time.perf_counter()
            steps = 0
            for batch in loader:
                x, y, valid = prep(batch)
                if opt.augment:
                    x, y, valid = gdata.augment(x, y, valid, generator=aug_gen)
                parts = losses_for(x, y, valid, mask_gen)
                parts.pop("_logits", None)
                loss = sum(parts.values())
                if not torch.isfinite(loss):
                    raise GeoAlpsError(f"{job.output}: loss became {loss.item()} at epoch {epoch + 1}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                steps += 1
                sums["loss"] += loss.item()
                for k, v in parts.items():
                    sums[k] += v.item()
                rate = steps * opt.batch_size / max(time.perf_counter() - t0, 1e-9)
                progress.update(1, message=f"epoch {epoch + 1}/{opt.epochs}", loss=f"{loss.item():.4f}", img_s=f"{rate:.1f}")
            seconds = time.perf_counter() - t0
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": sums["loss"] / max(steps, 1),
                "train_seg_loss": sums["seg"] / max(steps, 1) if seg else "",
                "train_mim_loss": sums["mim"] / max(steps, 1) if mim else "",
                "lr": scheduler.get_last_lr()[0],
                "images_per_s": steps * opt.batch_size / max(seconds, 1e-9),
                "seconds": seconds,
            }
            row.update(_validate(job, model, val, prep, losses_for, device, seg, mim))
            history.append({k: row.get(k, "") for k in CSV_COLUMNS})
            _write_csv(metrics_csv, history)
            if writer is not None:
                for k, v in row.items():
                    if isinstance(v, float):
                        writer.add_scalar(k, v, epoch + 1)
            progress.write(_epoch_line(row, opt.epochs))
            resume = {
                "epoch": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "sample_rng": sample_gen.get_state(),
                "aug_rng": aug_gen.get_state(),
                "mask_rng": mask_gen.get_state(),
                "torch_rng": torch.get_rng_state(),
            }
            save_checkpoint(_payload(job, model, history, resume), last)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
    save_checkpoint(_payload(job, model, history, None), job.output, overwrite=True)
    if last.exists():
        last.unlink()
    return history


def _validate(job, model, loader, prep, losses_for, device, seg: bool, mim: bool) -> dict[str, Any]:
    """Loss, mIoU and accuracy on the validation strips (masks from a fixed seed each epoch)."""
    import torch

    from geoalps.train import data as gdata
    from geoalps.train.metrics import confusion_matrix, scores

    if loader is None:
        return {}
    model.eval()
    if mim:
        job.mim_head.eval()
    n = job.arch["num_classes"]
    confusion = np.zeros((max(n, 1), max(n, 1) + 1), dtype=np.int64)
    sums = {"seg": 0.0, "mim": 0.0}
    batches = 0
    mask_gen = torch.Generator().manual_seed(job.options.seed + 4)
    with torch.no_grad():
        for batch in loader:
            x, y, valid = prep(batch, boxes=job.regions.val)
            parts = losses_for(x, y, valid, mask_gen)
            batches += 1
            for k in ("seg", "mim"):
                if k in parts:
                    sums[k] += parts[k].item()
            if seg:
                pred = parts["_logits"].argmax(1).cpu().numpy()
                confusion += confusion_matrix(pred, y.cpu().numpy(), n, ignore=gdata.IGNORE_INDEX)
    out: dict[str, Any] = {}
    if seg:
        s = scores(confusion)
        out.update(val_seg_loss=sums["seg"] / max(batches, 1), val_miou=s["miou"], val_accuracy=s["overall_accuracy"])
    if mim:
        out["val_mim_loss"] = sums["mim"] / max(batches, 1)
    return out


def _payload(job: _Job, model, history: list[dict[str, Any]], resume: dict[str, Any] | None) -> dict[str, Any]:
    scene = job.data.scenes[0]
    payload = {
        "kind": job.kind,
        "arch": job.arch,
        "bands": {"count": scene.count, "descriptions": list(scene.descriptions), "dtype": scene.dtype, "nodata": scene.nodata},
        "norm": job.norm,
        "classes": job.classes,
        "tile_size_px": job.arch["tile_size_px"],
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": {
            "objective": job.objective,
            "images": [s.path for s in job.data.scenes],
            "labels": [i.path for i in job.data.labels],
            "regions": job.regions.to_dict(),
            "crs": job.data.dataset.crs.to_wkt(),
            "options": {k: v for k, v in vars(job.options).items()},
            "mask_ratio": job.mask_ratio,
            "mask_patch_px": job.mask_patch_px,
            "history": history,
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
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


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

