"""A weight-free region-proposal engine: graph-based segmentation merged into object-sized regions.

It lets geoalps do real work on a machine without SAM weights. Felzenszwalb's graph segmentation
decides boundaries from local contrast, so the same object gets nearly the same region in two
overlapping tiles (which keeps seams clean); a region-adjacency merge then joins neighbouring
regions of near-identical colour into object-sized ones.
"""
from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import label as connected_label
from skimage.segmentation import felzenszwalb

from geoalps.engines.base import MaskEngine, register_engine
from geoalps.objects.masks import TileMasks


@register_engine("classical")
class ClassicalEngine(MaskEngine):
    """Felzenszwalb segmentation + colour-similarity merge; score = boundary contrast.

    Cost: about a second per 1024 x 1024 tile on one core (felzenszwalb dominates); memory a few
    label images of the tile. Everything after the segmentation is vectorised over pixels.
    """

    disjoint_masks = True  # a partition of the tile: nothing to deduplicate

    #: Neighbouring regions whose mean colours differ by less than this (0..255 RGB distance)
    #: are merged.
    merge_colour_distance = 10.0
    #: Light smoothing only: more blurs object edges into strips of their own.
    sigma = 0.3

    def generate(self, rgb: np.ndarray, valid: np.ndarray) -> TileMasks:
        height, width = valid.shape
        if not valid.any():
            return TileMasks([], np.zeros((0, 4)), np.zeros(0), tile_shape=(height, width))
        min_size = max(16, self.options.min_area_px // 2)
        labels = felzenszwalb(
            rgb, scale=self.options.classical_scale, sigma=self.sigma, min_size=min_size, channel_axis=-1
        )
        labels = labels + 1
        labels[~valid] = 0
        regions = RegionGraph(rgb, labels)
        labels = regions.merged(self.merge_colour_distance)
        scores = RegionGraph(rgb, labels).contrast_scores()
        return TileMasks.from_labels(labels, scores)


class RegionGraph:
    """Regions of a label image (0 = no data), their mean colours and 4-neighbour adjacency.

    Built with bincount and array comparisons in one pass over the pixels (skimage's RAG calls
    Python once per pixel, far too slow for 1024 px tiles).
    """

    def __init__(self, rgb: np.ndarray, labels: np.ndarray) -> None:
        self.labels = labels
        self.n = int(labels.max()) + 1
        flat = labels.ravel()
        counts = np.bincount(flat, minlength=self.n).astype(np.float64)
        self.counts = counts
        pixels = rgb.reshape(-1, 3).astype(np.float64)
        sums = np.stack([np.bincount(flat, pixels[:, c], self.n) for c in range(3)], axis=1)
        squares = np.stack([np.bincount(flat, pixels[:, c] ** 2, self.n) for c in range(3)], axis=1)
        safe = np.maximum(counts, 1)[:, None]
        self.means = sums / safe
        self.spread = np.sqrt(np.maximum(squares / safe - self.means**2, 0).sum(axis=1))
        pairs = np.concatenate([
            np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
            np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
        ])
        pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs[:, 0] > 0) & (pairs[:, 1] > 0)].astype(np.int64)
        pairs.sort(axis=1)
        codes = np.unique(pairs[:, 0] * self.n + pairs[:, 1])  # 1-D unique is far cheaper than axis=0
        self.edges = np.stack([codes // self.n, codes % self.n], axis=1)
        self.edge_distance = np.linalg.norm(self.means[self.edges[:, 0]] - self.means[self.edges[:, 1]], axis=1)

    def merged(self, max_distance: float) -> np.ndarray:
        """Label image where neighbours closer than ``max_distance`` in mean colour are one region,
        then split into 4-connected pieces and numbered 1..L (0 stays 0)."""
        join = self.edges[self.edge_distance < max_distance]
        graph = coo_matrix((np.ones(len(join)), (join[:, 0], join[:, 1])), shape=(self.n, self.n))
        _, component = connected_components(graph, directed=False)
        component = component + 1
        component[0] = 0
        return connected_label(component[self.labels], background=0, connectivity=1).astype(np.int32)

    def contrast_scores(self) -> np.ndarray:
        """Per-label confidence in [0, 1]: mean colour distance to the neighbours relative to the
        region's own colour spread (index 0 unused)."""
        total = np.zeros(self.n)
        degree = np.zeros(self.n)
        for side in (0, 1):
            np.add.at(total, self.edges[:, side], self.edge_distance)
            np.add.at(degree, self.edges[:, side], 1)
        contrast = total / np.maximum(degree, 1)
        scores = (contrast / (contrast + self.spread + 1.0)).astype(np.float32)
        scores[0] = 0
        return scores
