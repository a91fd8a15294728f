"""The mask-engine interface and its registry.

An engine turns tiles (:class:`EngineTile`: the 8-bit RGB view, and every band and the ground
resolution for engines with ``wants_bands``) into object masks. Adding an engine (SAM2, MobileSAM)
is one subclass registered under a name; the pipeline never imports engines directly and calls
one method of theirs, :meth:`MaskEngine.generate_tiles`, the one door every engine fills in.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from geoalps.objects.masks import TileMasks
from geoalps.options import MIN_AREA_PX_DEFAULT, LabelOptions


@dataclass(frozen=True)
class EngineTile:
    """One tile as the pipeline hands it to an engine.

    ``rgb``: (H, W, 3) uint8 view of the mapped bands (``--bands``); ``valid``: (H, W) pixels with
    data; ``bands``: (H, W, C) uint8, *every* band of the scene on the scene's stretch (filled only
    for engines with ``wants_bands``); ``pixel_size_m``: ground size of one pixel in metres, the
    same for every tile of a scene (None when the scene has no CRS).
    """

    rgb: np.ndarray
    valid: np.ndarray
    bands: np.ndarray | None = None
    pixel_size_m: float | None = None


class MaskEngine(ABC):
    """Proposes object masks for one tile.

    ``provides_embedding`` says whether :meth:`generate_tiles` fills ``TileMasks.embedding`` (a feature map
    the pipeline pools under each mask, as ALPS does with SAM's image encoder).
    """

    name: ClassVar[str]
    provides_embedding: ClassVar[bool] = False
    #: True when masks never overlap (a partition of the tile): duplicate removal is skipped.
    disjoint_masks: ClassVar[bool] = False
    #: True when the engine uses :attr:`EngineTile.bands` (the pipeline then stretches every band).
    wants_bands: ClassVar[bool] = False
    #: Masks over this share of a tile's valid area are dropped unless ``--max-area-frac`` says
    #: otherwise: ALPS's area threshold (a SAM mask of most of the tile is background, not an object).
    max_mask_frac_default: ClassVar[float] = 0.3

    def __init__(self, options: LabelOptions, tile_batch: int = 0) -> None:
        """``tile_batch``: tiles per engine call asked for (``--tile-batch``; 0 = the engine's choice)."""
        self.options = options

    @abstractmethod
    def generate_tiles(self, tiles: list[EngineTile]) -> list[TileMasks]:
        """Masks for the pipeline's tiles, one :class:`TileMasks` each: the one door into an
        engine (``tiles_per_call`` tiles at a time; an engine that batches, as SAM's encoder does,
        takes them together)."""

    def min_mask_px(self, pixel_size_m: float | None) -> int:
        """Masks smaller than this are dropped after the engine: ``--min-area-px``, or the
        engine's own choice for a scene of this resolution when it is not given."""
        return self.options.min_area_px if self.options.min_area_px is not None else MIN_AREA_PX_DEFAULT

    def max_mask_frac(self) -> float:
        """Masks larger than this share of the tile's valid area are dropped after the engine:
        ``--max-area-frac``, or :attr:`max_mask_frac_default` when it is not given."""
        return self.options.max_area_frac if self.options.max_area_frac is not None else self.max_mask_frac_default

    def describe(self) -> str:
        """One line for the log: which engine and model a run used."""
        return self.name

    @property
    def tiles_per_call(self) -> int:
        """How many tiles one task hands to :meth:`generate_tiles` (engines that batch on a GPU
        say more than 1)."""
        return 1



_REGISTRY: dict[str, type[MaskEngine]] = {}


def register_engine(name: str) -> Callable[[type[MaskEngine]], type[MaskEngine]]:
    def decorate(cls: type[MaskEngine]) -> type[MaskEngine]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def engine_names() -> list[str]:
    return sorted(_REGISTRY)


def engine_class(name: str) -> type[MaskEngine]:
    from geoalps.errors import OptionError

    try:
        return _REGISTRY[name]
    except KeyError:
        raise OptionError(f"unknown engine {name!r} (known: {', '.join(engine_names())})") from None
