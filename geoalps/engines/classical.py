"""A weight-free region-proposal engine: graph-based segmentation merged into object-sized regions.

It lets geoalps do real work on a machine without SAM weights. Felzenszwalb's graph segmentation
decides boundaries from local contrast in *every* band of the scene (NIR separates vegetation from
roofs and roads of the same colour), so the same object gets nearly the same region in two
overlapping tiles (which keeps seams clean); a region-adjacency merge then joins neighbouring
regions whose mean values over all bands are near-identical.

With ``--classical-split`` (on by default), regions far larger than an object
(:data:`SPLIT_REGION_FACTOR` times the smallest region) are then split where the tile's own spectral clusters say they straddle land cover
(:func:`split_by_clusters`): the first cut and the merge follow local contrast, so two
covers of similar brightness with a soft edge between them (grass and a dirt road, a lake shore
under haze) end up in one region, and no clustering of regions can undo that. Object-sized
regions (roofs, crowns) are left whole.

Region sizes follow the scene's ground resolution (:func:`region_scale`): the smallest region is
an area in m2 turned into pixels, clamped, so regions of 30 m Landsat are a few pixels (land
cover changes within a few pixels there) and a 0.1 m aerial crown is a few hundred. The
resolution is a scene property, so every tile of a scene is cut with the same settings and a
region in the overlap of two tiles comes out the same in both. Scenes without a CRS keep the
fixed settings of earlier versions.
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.filters import gaussian
from skimage.measure import label as connected_label
from skimage.segmentation import felzenszwalb
from skimage.util import img_as_float64

from geoalps.engines.base import EngineTile, MaskEngine, register_engine
from geoalps.objects.masks import TileMasks

#: Smallest felzenszwalb region, in m2 of ground, before the clamps below.
REGION_M2 = 32.0
#: Clamps on that region in pixels: coarse imagery keeps near-pixel regions, fine imagery does not
#: split one roof or crown into pixel-sized bits.
REGION_MIN_PX, REGION_MAX_PX = 8, 128
#: Scenes in pixel coordinates (no resolution): the fixed smallest region of earlier versions.
REGION_NO_CRS_PX = 32
#: With a resolution, felzenszwalb's scale is ``classical_scale`` times this at
#: :data:`REGION_MAX_PX`, times (min_size / REGION_MAX_PX) ** :data:`SCALE_EXPONENT` below it.
RESOLVED_SCALE_FACTOR = 0.5
SCALE_EXPONENT = 0.25
#: With ``classical_split``, regions of at least this many smallest regions (``min_size``) are
#: split along spectral clusters. On the scene bank's selection half (``benchmarks/label_quality``)
#: 16 lifts the worst segment oracle from 0.867 to 0.976 and leaves object recall on every building
#: and crown scene as it was (8 already splits some crowns and roofs).
SPLIT_REGION_FACTOR = 16
#: Spectral clusters of one tile's fine units that a large region is split along (a fixed number:
#: the segmentation does not depend on ``--classes``, so the segment oracle is one per scene).
SPLIT_CLUSTERS = 6
#: The fine units are felzenszwalb's regions at this fraction of the scale and the smallest region.
#: Square blocks of that size instead cost a quarter of the added time (pass 1 x1.2 the default's
#: against about x1.7) but, with k-means fitted on the uncut regions, move the K-class output of the
#: bank's 10-20 m selection scenes down (s06 0.454 -> 0.396 at K; units of 2 px carry the pixels'
#: noise) and lose a crown on NEON SJER (``benchmarks/label_quality``, fourth and fifth rounds).
SPLIT_FINE_FRACTION = 0.25
#: The clusters are fitted on at most this many units of a tile (a fixed sample), then given to all.
SPLIT_FIT_UNITS = 4096


def region_scale(classical_scale: float, pixel_size_m: float | None) -> tuple[float, int]:
    """(felzenszwalb ``scale``, ``min_size`` in px) for a scene of this resolution.

    ``min_size`` is :data:`REGION_M2` in pixels, clamped to [:data:`REGION_MIN_PX`,
    :data:`REGION_MAX_PX`]; ``scale`` (half ``classical_scale`` at 128 px: 100 by default)
    shrinks slowly with it (50 at 8 px), since felzenszwalb's scale is a region size times a
    contrast. The constants come from ``benchmarks/label_quality``. Without a resolution:
    (``classical_scale``, :data:`REGION_NO_CRS_PX`), the engine's fixed settings before.
    """
    if pixel_size_m is None or not math.isfinite(pixel_size_m) or pixel_size_m <= 0:
        return classical_scale, REGION_NO_CRS_PX
    pixels = REGION_M2 / pixel_size_m**2
    min_size = int(round(min(max(pixels, REGION_MIN_PX), REGION_MAX_PX)))
    scale = classical_scale * RESOLVED_SCALE_FACTOR * (min_size / REGION_MAX_PX) ** SCALE_EXPONENT
    return scale, min_size


def split_size_px(min_size_px: int, split: bool) -> int:
    """Regions of at least this many pixels are split along spectral clusters: :data:`SPLIT_REGION_FACTOR`
    smallest regions with ``classical_split``, else 0 (never)."""
    return SPLIT_REGION_FACTOR * min_size_px if split else 0


class RegionSettings(NamedTuple):
    """What decides the classical engine's regions for one scene."""

    scale: float  #: felzenszwalb's scale (larger: larger regions)
    min_size_px: int  #: felzenszwalb's smallest region; smaller 4-connected pieces are joined
    sigma_px: float  #: Gaussian smoothing before felzenszwalb, in pixels
    merge_distance: float  #: neighbours closer than this in mean value (0..255) are merged
    split_min_px: int = 0  #: regions at least this large are split along spectral clusters (0: never)


@register_engine("classical")
class ClassicalEngine(MaskEngine):
    """Felzenszwalb segmentation on all bands + similarity merge; score = boundary contrast.

    Cost: about a second per 1024 x 1024 tile on one core (felzenszwalb dominates, its cost grows
    slowly with the band count); memory a few label images of the tile and one float copy of its
    bands. Everything after the segmentation is vectorised over pixels.
    """

    disjoint_masks = True  # a partition of the tile: nothing to deduplicate
    wants_bands = True
    #: Every region is kept, however large: in a partition a region of most of the tile is a land
    #: cover (a field, a lake, bare soil), and ALPS's 0.3 left it unlabelled, a hole in the label
    #: raster (31 % of the bank's a09_drawn_020, its soil).
    max_mask_frac_default = 1.0

    #: Neighbouring regions whose mean values differ by less than this (0..255, distance over the
    #: bands scaled to three channels) are merged.
    merge_colour_distance = 10.0
    #: Light smoothing only: more blurs object edges into strips of their own.
    sigma = 0.3

    def min_mask_px(self, pixel_size_m: float | None) -> int:
        """``--min-area-px`` when given; else the smallest region for this resolution (64 px
        without one, as before), so fine regions of coarse imagery are kept, not dropped."""
        if self.options.min_area_px is not None:
            return self.options.min_area_px
        if pixel_size_m is None:
            return super().min_mask_px(pixel_size_m)
        return region_scale(self.options.classical_scale, pixel_size_m)[1]

    def settings(self, pixel_size_m: float | None) -> RegionSettings:
        """The segmentation settings for a scene of this resolution: the one place they are
        decided (``benchmarks/label_quality/engine_sweep.py`` overrides it to sweep them)."""
        scale, min_size = region_scale(self.options.classical_scale, pixel_size_m)
        return RegionSettings(scale, min_size, self.sigma, self.merge_colour_distance,
                              split_size_px(min_size, self.options.classical_split))

    def generate_tiles(self, tiles: list[EngineTile]) -> list[TileMasks]:
        return [self.segment(tile) for tile in tiles]

    def segment(self, tile: EngineTile) -> TileMasks:
        """Regions of one tile: every band when the tile has them, else the RGB view."""
        valid = tile.valid
        height, width = valid.shape
        if not valid.any():
            return TileMasks([], np.zeros((0, 4)), np.zeros(0), tile_shape=(height, width))
        image = scaled_bands(tile.bands if tile.bands is not None else tile.rgb)
        settings = self.settings(tile.pixel_size_m)
        smoothed = _smoothed(image, settings.sigma_px)  # once for both felzenszwalb calls of the split
        labels = _felzenszwalb(smoothed, settings.scale, settings.min_size_px) + 1
        labels[~valid] = 0
        values = image * 255.0
        # Before the split, one pass of small-piece joins: the split's last merge absorbs what is
        # left, and its k-means sample (drawn by unit index) stays what it was for the regions
        # (absorbing here too redrew it: a crown of NEON SJER lost, best IoU 0.418 -> 0.197).
        split = bool(settings.split_min_px)
        labels = RegionGraph(values, labels).merged(settings.merge_distance, settings.min_size_px, absorb_all=not split)
        regions = labels
        if split and (np.bincount(labels.ravel())[1:] >= settings.split_min_px).any():
            labels = self._split_large(smoothed, values, labels, settings)
        elif split:  # nothing to cut: absorb the small pieces the one pass left
            labels = regions = RegionGraph(values, labels, connected=True).merged(0.0, settings.min_size_px)
        scores = RegionGraph(values, labels).contrast_scores()
        masks = TileMasks.from_labels(labels, scores)
        if labels is not regions:  # classes are learnt on the uncut regions (TileMasks.fit_labels)
            masks.fit_labels = regions
        return masks

    def _split_large(self, smoothed: np.ndarray, values: np.ndarray, labels: np.ndarray,
                     settings: RegionSettings) -> np.ndarray:
        """``labels`` with every region of at least ``split_min_px`` (one at least) cut along the
        spectral clusters of its fine units (felzenszwalb at :data:`SPLIT_FINE_FRACTION` of scale
        and smallest region, on the tile as :func:`_smoothed` for the regions). Cost: a second
        felzenszwalb and a k-means of a few thousand unit means (the engine's time again)."""
        fine = _felzenszwalb(smoothed, settings.scale * SPLIT_FINE_FRACTION,
                             max(2, int(settings.min_size_px * SPLIT_FINE_FRACTION)))
        return split_by_clusters(values, labels, fine, settings.split_min_px, settings.min_size_px,
                                 settings.merge_distance)


def _smoothed(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """``image`` smoothed exactly as skimage's felzenszwalb smooths its input (float64, each band,
    Gaussian of ``sigma_px``, reflected edges), done once so the split's second call does not
    repeat it (a tenth of a call); felzenszwalb then runs with ``sigma=0`` and gives the same
    regions, bit for bit (``tests/engines/test_classical.py``). Memory: one float64 copy of the
    tile's bands, which felzenszwalb made itself before."""
    return gaussian(img_as_float64(image), sigma=[sigma_px, sigma_px, 0], mode="reflect", channel_axis=-1)


def _felzenszwalb(smoothed: np.ndarray, scale: float, min_size_px: int) -> np.ndarray:
    """skimage's felzenszwalb on every band of a :func:`_smoothed` image (labels from 0)."""
    with warnings.catch_warnings():  # skimage warns about more than 3 channels: intended here
        warnings.simplefilter("ignore", RuntimeWarning)
        return felzenszwalb(smoothed, scale=scale, sigma=0.0, min_size=min_size_px, channel_axis=-1)


def _joined(labels: np.ndarray, join: np.ndarray, n: int) -> np.ndarray:
    """``labels`` with the label pairs in ``join`` made one region, then split into 4-connected
    pieces numbered 1..L (0 stays 0)."""
    graph = coo_matrix((np.ones(len(join)), (join[:, 0], join[:, 1])), shape=(n, n))
    return _grouped(connected_components(graph, directed=False)[1], labels)


def _grouped(group: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` with each label (but 0, which has no neighbours and stays 0) replaced by its
    ``group``, then split into 4-connected pieces numbered 1..L in raster order."""
    code = group + 1
    code[0] = 0
    return connected_label(code[labels], background=0, connectivity=1).astype(np.int32)


def _small_absorbed(counts: np.ndarray, means: np.ndarray, edges: np.ndarray, min_size_px: int,
                    until_none: bool = True) -> np.ndarray:
    """Group of every label of a region graph (for :func:`_grouped`), with each group under
    ``min_size_px`` joined to its most similar neighbouring group, repeated until no group that
    small has a neighbour (``until_none``; else one pass). Each small group points to one
    neighbour, so a joined group holds at most one large one; but two small pieces that are each
    other's nearest form a group still under the size, which a single pass leaves, to be dropped
    as a mask (up to 1 % of a scene's pixels unlabelled, ``benchmarks/label_quality``). Cost: a
    few passes over the graph's edges, none over pixels."""
    n = len(counts)
    sums = np.ascontiguousarray((means * counts[:, None]).T)  # per band, for the joined groups' means
    group, sizes, group_means = np.arange(n), counts, means  # the first pass is on the labels themselves
    for _ in range(n if until_none else 1):  # each pass joins at least one group: n bounds them
        first, second = group[edges[:, 0]], group[edges[:, 1]]
        small = sizes < min_size_px  # label 0 (no data) has no edges: never picked
        touching = (small[first] | small[second]) & (first != second)
        if not touching.any():
            break
        edges = edges[touching]  # groups only grow: an edge between two large ones never matters again
        first, second = first[touching], second[touching]
        distance = np.linalg.norm(group_means[first] - group_means[second], axis=1)
        source, target = np.concatenate([first, second]), np.concatenate([second, first])
        distance = np.concatenate([distance, distance])
        pick = small[source]
        source, target, distance = source[pick], target[pick], distance[pick]
        order = np.lexsort((target, distance, source))  # nearest neighbour first, ties by label
        source, target = source[order], target[order]
        nearest = np.r_[True, source[1:] != source[:-1]]
        graph = coo_matrix((np.ones(int(nearest.sum())), (source[nearest], target[nearest])), shape=(n, n))
        group = connected_components(graph, directed=False)[1][group]
        if until_none:
            sizes = np.bincount(group, counts, n)
            group_means = np.stack([np.bincount(group, band, n) for band in sums], axis=1)
            group_means /= np.maximum(sizes, 1)[:, None]
    return group


def split_by_clusters(image: np.ndarray, labels: np.ndarray, fine: np.ndarray, split_min_px: int,
                      min_size_px: int, merge_distance: float) -> np.ndarray:
    """``labels`` (0 = no data) with each region of at least ``split_min_px`` cut into the pieces
    whose ``fine`` units (any label image of the tile) fall in one spectral cluster of the tile;
    pieces under ``min_size_px`` join their most similar neighbour; numbered 1..L. Clusters whose
    centres are closer than ``merge_distance`` count as one (a uniform surface is not cut along
    its noise).

    Units are the (region, ``fine`` label) pairs. Clusters: k-means (:data:`SPLIT_CLUSTERS`,
    area-weighted, fixed seed, fitted on a fixed sample of :data:`SPLIT_FIT_UNITS` units of the
    whole tile) on each unit's band shares (its mean values over their sum) and log brightness, so
    a region is cut where the *kind* of surface changes, not where shade darkens one side of a roof
    or crown. The pixels of the large regions are then cut into the 4-connected pieces of one
    cluster: one pass of connected-component labelling over region x cluster codes, no graph of
    the units.
    """
    from sklearn.cluster import KMeans

    flat = labels.ravel()
    labelled = np.flatnonzero(flat)
    n_fine = int(fine.max()) + 1
    codes = flat[labelled].astype(np.int64) * n_fine + fine.ravel()[labelled]
    _, unit, unit_px = np.unique(codes, return_inverse=True, return_counts=True)
    channels = image.shape[-1]
    pixels = image.reshape(-1, channels)[labelled]
    means = np.stack([np.bincount(unit, pixels[:, c], len(unit_px)) for c in range(channels)], axis=1) / unit_px[:, None]
    brightness = means.sum(axis=1, keepdims=True) + 1.0
    shares = np.concatenate([means / brightness * 255.0, 10.0 * np.log1p(brightness)], axis=1)
    fit = np.arange(len(shares))
    if len(fit) > SPLIT_FIT_UNITS:  # a fixed sample: k-means of 20,000 units costs a third of a second
        fit = np.sort(np.random.default_rng(0).choice(len(shares), SPLIT_FIT_UNITS, replace=False))
    n_clusters = min(SPLIT_CLUSTERS, len(np.unique(shares[fit], axis=0)))  # flat tiles: fewer kinds
    if n_clusters < 2:
        return _joined(labels, np.zeros((0, 2), np.int64), int(labels.max()) + 1)
    model = KMeans(n_clusters, n_init=1, random_state=0).fit(shares[fit], sample_weight=unit_px[fit].astype(np.float64))
    # k-means splits even pure noise: clusters closer than the merge distance are one surface
    centres = model.cluster_centers_
    near = np.linalg.norm(centres[:, None] - centres[None], axis=2) < merge_distance
    n_surfaces, surface = connected_components(coo_matrix(near), directed=False)
    large = np.bincount(flat) >= split_min_px
    large[0] = False
    inside = large[flat[labelled]]
    code = labels.astype(np.int64) * (n_surfaces + 1)  # small regions: one code, never cut
    code.ravel()[labelled[inside]] += surface[model.predict(shares)][unit[inside]] + 1
    pieces = connected_label(code, background=0, connectivity=1).astype(np.int32)
    return RegionGraph(image, pieces, connected=True).merged(0.0, min_size_px)


def scaled_bands(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> float32 in [0, 1] divided by sqrt(C / 3): Euclidean distances over C
    bands then read as over three, so scale and merge distance keep their meaning for any band
    count."""
    channels = image.shape[-1]
    return image.astype(np.float32) * np.float32(1.0 / (255.0 * math.sqrt(channels / 3.0)))


class RegionGraph:
    """Regions of a label image (0 = no data), their mean values and 4-neighbour adjacency.

    Built with bincount and array comparisons in one pass over the pixels (skimage's RAG calls
    Python once per pixel, far too slow for 1024 px tiles).
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray, connected: bool = False) -> None:
        """``connected``: ``labels`` are already 4-connected pieces numbered 1..L in raster order
        (``skimage.measure.label``'s output), so :meth:`merged` with nothing to join reuses them."""
        self._connected = connected
        self.image = image
        self.labels = labels
        self.n = int(labels.max()) + 1
        flat = labels.ravel()
        counts = np.bincount(flat, minlength=self.n).astype(np.float64)
        self.counts = counts
        channels = image.shape[-1]
        bands = image.reshape(-1, channels).T  # a view; bincount sums each band in float64
        sums = np.stack([np.bincount(flat, bands[c], self.n) for c in range(channels)], axis=1)
        self.means = sums / np.maximum(counts, 1)[:, None]
        codes = []  # one code (low label, high label) per neighbour pair: 1-D unique is far cheaper than axis=0
        for first, second in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
            between = (first != second) & (first > 0) & (second > 0)
            first, second = first[between].astype(np.int64), second[between].astype(np.int64)
            codes.append(np.minimum(first, second) * self.n + np.maximum(first, second))
        codes = np.unique(np.concatenate(codes))
        self.edges = np.stack([codes // self.n, codes % self.n], axis=1)
        self.edge_distance = np.linalg.norm(self.means[self.edges[:, 0]] - self.means[self.edges[:, 1]], axis=1)

    def merged(self, max_distance: float, min_size_px: int = 1, absorb_all: bool = True) -> np.ndarray:
        """Label image where neighbours closer than ``max_distance`` in mean value are one region,
        split into 4-connected pieces, pieces under ``min_size_px`` joined to their most similar
        4-neighbour, numbered 1..L (0 stays 0). Felzenszwalb's regions are 8-connected: without
        the join, their diagonal slivers fall under the smallest mask and are left unlabelled.
        ``absorb_all``: join again until no region under the size has a neighbour; else one pass,
        which can leave pairs of small pieces (for a later merge to absorb)."""
        join = self.edges[self.edge_distance < max_distance]
        reuse = self._connected and not len(join)  # nothing to join: the pieces are the labels
        pieces = self.labels if reuse else _joined(self.labels, join, self.n)
        if min_size_px <= 1:
            return pieces
        graph = self if reuse else RegionGraph(self.image, pieces)
        return _grouped(_small_absorbed(graph.counts, graph.means, graph.edges, min_size_px, absorb_all), pieces)

    def contrast_scores(self) -> np.ndarray:
        """Per-label confidence in [0, 1]: mean value distance to the neighbours relative to the
        region's own spread (index 0 unused)."""
        total = np.zeros(self.n)
        degree = np.zeros(self.n)
        for side in (0, 1):
            np.add.at(total, self.edges[:, side], self.edge_distance)
            np.add.at(degree, self.edges[:, side], 1)
        contrast = total / np.maximum(degree, 1)
        flat = self.labels.ravel()
        pixels = self.image.reshape(-1, self.image.shape[-1]).astype(np.float64)
        squares = np.stack([np.bincount(flat, pixels[:, c] ** 2, self.n) for c in range(pixels.shape[1])], axis=1)
        spread = np.sqrt(np.maximum(squares / np.maximum(self.counts, 1)[:, None] - self.means**2, 0).sum(axis=1))
        scores = (contrast / (contrast + spread + 1.0)).astype(np.float32)
        scores[0] = 0
        return scores
