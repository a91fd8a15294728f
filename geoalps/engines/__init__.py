"""Mask engines behind one interface; ``create_engine`` resolves ``--engine auto``."""
from __future__ import annotations


from geoalps.engines.base import EngineTile, MaskEngine, engine_class, engine_names, register_engine
from geoalps.engines import classical as _classical  # noqa: F401  (registers "classical")
from geoalps.engines import sam as _sam  # noqa: F401  (registers "sam")
from geoalps.engines import sam2 as _sam2  # noqa: F401  (registers "sam2")
from geoalps.engines.sam.checkpoints import find_cached_checkpoint
from geoalps.engines.sam2.checkpoints import find_cached_checkpoint as find_cached_sam2
from geoalps.options import LabelOptions

__all__ = ["EngineTile", "MaskEngine", "create_engine", "engine_names", "register_engine", "resolve_engine_name"]


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
    """The engine ``options`` ask for (``auto`` resolved), asked to take ``tile_batch`` tiles per call."""
    return engine_class(resolve_engine_name(options))(options, tile_batch)
