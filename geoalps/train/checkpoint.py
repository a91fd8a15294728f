"""What a geoalps model file carries, so ``predict`` needs nothing but the file and a scene.

A checkpoint is a plain dict saved with ``torch.save`` (loadable with ``weights_only=True``):

    format        "geoalps-segmentation", version   1
    kind          "pretrain" or "train"
    arch          model size and every architecture number (see models.ModelSpec)
    bands         count, descriptions, dtype and nodata of the training scenes
    norm          per-band mean and std applied before the network
    classes       names and RGB colours, index = class id (empty for MIM-only pre-training)
    tile_size_px  the input tile size the network was built for
    model         the network's state_dict (backbone, decoder, classifier)
    mim_head      SimMIM head state_dict (pre-training with mim/both only)
    training      provenance: objective, images, labels, regions (pixel boxes [scene, col, row, w, h]), seed, per-epoch history
    resume        optimizer/scheduler/RNG state; only in the ``*.last.pt`` resume files
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from geoalps.errors import ModelError
from geoalps.files import atomic_path

FORMAT = "geoalps-segmentation"
VERSION = 1
REQUIRED = ("arch", "bands", "norm", "classes", "tile_size_px", "model")


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``payload`` atomically (temp file + rename), adding the format tag."""
    import torch

    payload = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a geoalps checkpoint on CPU; a one-line ModelError if it is not one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not a checkpoint we can read"
        raise ModelError(f"{path}: not a readable torch checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a geoalps model (made by 'geoalps pretrain' or 'geoalps train')")
    if payload.get("version", 0) > VERSION:
        raise ModelError(f"{path}: made by a newer geoalps (format version {payload['version']})")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return payload


def resume_path(output: str | os.PathLike) -> Path:
    """Where training keeps its last-epoch state for ``--resume``: ``model.pt`` -> ``model.last.pt``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.last{output.suffix or '.pt'}")
