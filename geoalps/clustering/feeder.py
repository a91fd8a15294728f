"""Feeding the online k-means in plan order, whatever order tiles finish in.

So the fitted model (and every class) is the same for 1 worker, N workers or a resumed run.
"""
from __future__ import annotations

from typing import Callable

from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.objects.tile_result import TileResult
from geoalps.options import LabelOptions


class OrderedFeeder:
    """Feeds k-means with tile features strictly in plan order, whatever order tiles finish in,
    so the fitted model (and every class) is the same for 1 worker, N workers or a resumed run.
    Holds only the feature matrices of tiles that finished ahead of their turn; ``load(key)``
    reads a finished tile's result back (from the work store) when it was not handed in fresh."""

    def __init__(self, tiles, load: Callable[[str], TileResult], blocks, clusterer: OnlineKMeans | None, opts: LabelOptions, model_path):
        self.tiles, self.load, self.blocks = tiles, load, blocks
        self.clusterer, self.opts, self.model_path = clusterer, opts, model_path
        self.next = 0
        self.waiting: dict[str, TileResult] = {}
        self.skipped = 0
        self.engine_seconds = 0.0
        self.tile_seconds = 0.0
        self._checked = False

    def advance(self, done: set[str], fresh: dict[str, TileResult] | None = None) -> None:
        for key, result in (fresh or {}).items():
            self.waiting[key] = self._summary(result)  # features only: polygons are on disk
        while self.next < len(self.tiles) and self.tiles[self.next].key in done:
            key = self.tiles[self.next].key
            summary = self.waiting.pop(key, None) or self._summary(self.load(key))
            self._feed(*summary)
            self.next += 1

    def _summary(self, result: TileResult) -> tuple:
        widths = {b: result.features[b].shape[1] for b in self.blocks} if len(result) else {}
        features = result.feature_matrix(self.blocks) if len(result) else None
        area = result.area_px if len(result) else None
        return features, widths, result.skipped, result.engine_seconds, result.seconds, area

    def _feed(self, features, widths, skipped: bool, engine_seconds: float, seconds: float, area=None) -> None:
        self.skipped += int(skipped)
        self.engine_seconds += engine_seconds
        self.tile_seconds += seconds
        if features is None:
            return
        if self.clusterer is None:
            self.clusterer = OnlineKMeans(self.opts.classes, widths, seed=self.opts.seed)
        elif self.clusterer.frozen and not self._checked:
            self.clusterer.check_compatible(widths, str(self.model_path))
            self._checked = True
        self.clusterer.partial_fit(features, sample_weight=area)  # per-pixel quality: weigh by area
