"""Mask engines behind one interface; ``create_engine`` resolves ``--engine auto``."""
from __future__ import annotations


from geoalps.engines.base import EngineTile, MaskEngine, engine_class, engine_names, register_engine
from geoalps.engines import classical as _classical  # noqa: F401  (registers "classical")
from geoalps.engines import sam as _sam  # noqa: F401  (registers "sam")
from geoalps.engines.sam.checkpoints import find_checkpoint
from geoalps.options import LabelOptions

__all__ = ["EngineTile", "MaskEngine", "create_engine", "engine_names", "register_engine", "resolve_engine_name"]


def resolve_engine_name(options: LabelOptions) -> str:
    """``auto`` means sam when a checkpoint is known (option, environment or cache), else classical."""
    if options.engine != "auto":
        return options.engine
    return "sam" if find_checkpoint(options.checkpoint, options.model_type) else "classical"


def create_engine(options: LabelOptions, tile_batch: int = 0) -> MaskEngine:
    """The engine ``options`` ask for (``auto`` resolved), asked to take ``tile_batch`` tiles per call."""
    return engine_class(resolve_engine_name(options))(options, tile_batch)
