"""Mask engines behind one interface. ``--engine auto`` is decided once a run, by
:func:`resolve_engine` on the validated options; the resolved options travel to every worker,
so :func:`create_engine` only looks the engine up."""
from __future__ import annotations

from dataclasses import replace

from geoalps.engines.base import EngineTile, MaskEngine, engine_class, engine_names, register_engine
from geoalps.engines import classical as _classical  # noqa: F401  (registers "classical")
from geoalps.engines import sam as _sam  # noqa: F401  (registers "sam")
from geoalps.engines import sam2 as _sam2  # noqa: F401  (registers "sam2")
from geoalps.engines.sam.checkpoints import find_cached_checkpoint
from geoalps.engines.sam2.checkpoints import find_cached_checkpoint as find_cached_sam2
from geoalps.options import LabelOptions

__all__ = ["EngineTile", "MaskEngine", "create_engine", "engine_names", "register_engine", "resolve_engine",
           "resolve_engine_name"]


def resolve_engine(options: LabelOptions) -> LabelOptions:
    """``options`` with the engine decided: ``engine`` never ``auto`` (:func:`resolve_engine_name`)
    and, for the SAM engines, ``checkpoint`` the file they will load (the one named, else the
    cached one), so no worker looks again. Options already decided come back unchanged. Cost:
    with ``auto`` and a checkpoint named, one memory-mapped read of its tensor names."""
    if options.engine != "auto" and (options.checkpoint or options.engine == "classical"):
        return options
    engine = resolve_engine_name(options)
    checkpoint = options.checkpoint
    if not checkpoint and engine == "sam":
        checkpoint = find_cached_checkpoint(options.model_type or "auto")
    elif not checkpoint and engine == "sam2":  # as the sam2 engine looks (a vit_* type means any)
        model_type = options.model_type or "auto"
        checkpoint = find_cached_sam2("auto" if model_type.startswith("vit") else model_type)
    return replace(options, engine=engine, checkpoint=str(checkpoint) if checkpoint else None)


def resolve_engine_name(options: LabelOptions) -> str:
    """``auto``: the engine of the checkpoint named (option or environment: sam2 for a SAM 2
    file, else sam), else sam when a SAM checkpoint is cached, else sam2 when a SAM 2 one is,
    else classical."""
    if options.engine != "auto":
        return options.engine
    from geoalps.options import explicit_checkpoint

    explicit, _ = explicit_checkpoint(options.checkpoint)
    if explicit:
        return "sam2" if checkpoint_is_sam2(explicit) else "sam"
    model_type = options.model_type or "auto"
    if model_type.startswith("hiera"):
        return "sam2" if find_cached_sam2(model_type) else "classical"
    if find_cached_checkpoint(model_type):
        return "sam"
    if model_type == "auto" and find_cached_sam2("auto"):
        return "sam2"
    return "classical"


def checkpoint_is_sam2(path: str) -> bool:
    """Whether a checkpoint file holds SAM 2 weights (a Hiera trunk), read from its tensor names
    (memory-mapped, no tensor is read). Unreadable files count as SAM: its loader reports them."""
    try:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    return isinstance(obj, dict) and any(str(k).startswith("image_encoder.trunk.") for k in obj)


def create_engine(options: LabelOptions, tile_batch: int = 0) -> MaskEngine:
    """The engine ``options`` ask for, asked to take ``tile_batch`` tiles per call. A run hands
    in options :func:`resolve_engine` already decided; others are decided here."""
    options = resolve_engine(options)
    return engine_class(options.engine)(options, tile_batch)
