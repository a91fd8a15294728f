"""A weight-free region-proposal engine: graph-based segmentation merged into object-sized regions.

It lets geoalps do real work on a machine without SAM weights. Felzenszwalb's graph segmentation
decides boundaries from local contrast, so the same object gets nearly the same region in two
overlapping tiles (which keeps seams clean); a region-adjacency merge then joins neighbouring
regions of near-identical colour into object-sized ones.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import graph
from skimage.segmentation import felzenszwalb

from geoalps.engines.base import MaskEngine, register_engine
from geoalps.masks import TileMasks


@register_engine("classical")
class ClassicalEngine(MaskEngine):
    """Felzenszwalb segmentation + colour-similarity merge; score = boundary contrast.

    Cost: about 1 s per 1024 x 1024 tile on one core; memory a few label images of the tile.
    """

    #: Neighbouring regions whose mean colours differ by less than this (0..255 RGB distance)
    #: are merged.
    merge_colour_distance = 10.0

    def generate(self, rgb: np.ndarray, valid: np.ndarray) -> TileMasks:
        height, width = valid.shape
        if not valid.any():
            return TileMasks([], np.zeros((0, 4)), np.zeros(0), tile_shape=(height, width))
        min_size = max(16, self.options.min_area_px // 2)
        labels = felzenszwalb(
            rgb, scale=self.options.classical_scale, sigma=0.3, min_size=min_size, channel_axis=-1
        )
        labels = labels + 1
        labels[~valid] = 0
        labels = _merge_similar(rgb, labels, self.merge_colour_distance)
        scores = _contrast_scores(rgb, labels)
        return TileMasks.from_labels(labels, scores)


def _merge_similar(rgb: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Join adjacent regions whose mean colours are closer than ``threshold``; 0 stays 0."""
    n_regions = int(labels.max())
    if n_regions < 2:
        return labels
    rag = graph.rag_mean_color(rgb, labels, mode="distance")
    if 0 in rag:
        rag.remove_node(0)  # nodata is never merged into an object
    merged = graph.cut_threshold(labels, rag, threshold, in_place=True)
    # cut_threshold renumbers from 0; keep nodata at 0 and objects at 1..L.
    merged = merged + 1
    merged[labels == 0] = 0
    return _relabel(merged)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive labels 1..L, splitting regions that are not connected into separate objects."""
    out = np.zeros(labels.shape, dtype=np.int32)
    next_label = 1
    for value in np.unique(labels):
        if value == 0:
            continue
        pieces, count = ndimage.label(labels == value)
        out[pieces > 0] = pieces[pieces > 0] + (next_label - 1)
        next_label += count
    return out


def _contrast_scores(rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-label confidence in [0, 1]: how much a region stands out from its neighbours relative
    to its own colour spread (index 0 unused)."""
    n = int(labels.max())
    scores = np.zeros(n + 1, dtype=np.float32)
    if n == 0:
        return scores
    index = np.arange(1, n + 1)
    pixels = rgb.astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):  # labels without pixels give NaN, zeroed below
        means, spread = _region_colour_stats(pixels, labels, index)
    rag = graph.RAG(labels, connectivity=1)
    contrast = np.zeros(n, dtype=np.float32)
    for node in range(1, n + 1):
        if node not in rag:
            continue
        neighbours = [m for m in rag.neighbors(node) if m != 0]
        if neighbours:
            diffs = np.linalg.norm(means[np.array(neighbours) - 1] - means[node - 1], axis=1)
            contrast[node - 1] = float(np.mean(diffs))
    scores[1:] = contrast / (contrast + spread + 1.0)
    return scores


def _region_colour_stats(pixels: np.ndarray, labels: np.ndarray, index: np.ndarray):
    means = np.stack([ndimage.mean(pixels[..., c], labels, index) for c in range(3)], axis=1)
    spread = np.sqrt(sum(ndimage.variance(pixels[..., c], labels, index) for c in range(3)))
    return np.nan_to_num(means), np.nan_to_num(spread)
