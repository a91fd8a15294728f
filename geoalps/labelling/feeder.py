"""Pass 1's bookkeeping: tiles are fed to the online k-means in plan order, whatever order they
finish in, and the run's tile figures (skipped tiles, seconds) are summed on the way.

So the fitted model (and every class) is the same for 1 worker, N workers or a resumed run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.objects.tile_result import TileResult
from geoalps.options import LabelOptions


@dataclass(frozen=True)
class TileSummary:
    """What the feeder keeps of a tile that finished ahead of its turn: its features and figures,
    never its polygons (those are in the work store).

    ``features``: (objects, width) matrix of the run's feature blocks, None for a tile without
    objects; ``block_widths``: width of each block (checked against a saved model);
    ``area_px``: each row's pixel area, the k-means sample weight. The rows are the tile's fit
    regions when it has them (:meth:`TileResult.fit_sample`), else its objects."""

    features: np.ndarray | None
    block_widths: dict[str, int]
    skipped: bool
    engine_seconds: float
    seconds: float
    area_px: np.ndarray | None

    @classmethod
    def of(cls, result: TileResult, blocks) -> "TileSummary":
        if not len(result):
            return cls(None, {}, result.skipped, result.engine_seconds, result.seconds, None)
        features, area_px = result.fit_sample(blocks)
        return cls(features, {b: result.features[b].shape[1] for b in blocks},
                   result.skipped, result.engine_seconds, result.seconds, area_px)


class OrderedFeeder:
    """Feeds k-means with tile features strictly in plan order, whatever order tiles finish in,
    so the fitted model (and every class) is the same for 1 worker, N workers or a resumed run.
    Holds only the summaries of tiles that finished ahead of their turn; ``load(key)`` reads a
    finished tile's result back (from the work store) when it was not handed in fresh.

    Also the run's figures: ``skipped`` tiles (no valid pixel), ``engine_seconds`` and
    ``tile_seconds`` summed over the tiles fed."""

    def __init__(self, tiles, load: Callable[[str], TileResult], blocks, clusterer: OnlineKMeans | None,
                 opts: LabelOptions, model_path):
        self.tiles, self.load, self.blocks = tiles, load, blocks
        self.clusterer, self.opts, self.model_path = clusterer, opts, model_path
        self.next = 0
        self.waiting: dict[str, TileSummary] = {}
        self.skipped = 0
        self.engine_seconds = 0.0
        self.tile_seconds = 0.0
        self._checked = False

    def advance(self, done: set[str], fresh: dict[str, TileResult] | None = None) -> None:
        for key, result in (fresh or {}).items():
            self.waiting[key] = TileSummary.of(result, self.blocks)  # features only: polygons are on disk
        while self.next < len(self.tiles) and self.tiles[self.next].key in done:
            key = self.tiles[self.next].key
            summary = self.waiting.pop(key, None) or TileSummary.of(self.load(key), self.blocks)
            self._feed(summary)
            self.next += 1

    def _feed(self, summary: TileSummary) -> None:
        self.skipped += int(summary.skipped)
        self.engine_seconds += summary.engine_seconds
        self.tile_seconds += summary.seconds
        if summary.features is None:
            return
        if self.clusterer is None:
            self.clusterer = OnlineKMeans(self.opts.classes, summary.block_widths, seed=self.opts.seed)
        elif self.clusterer.frozen and not self._checked:
            self.clusterer.check_compatible(summary.block_widths, str(self.model_path))
            self._checked = True
        self.clusterer.partial_fit(summary.features, sample_weight=summary.area_px)  # per-pixel quality: weigh by area
