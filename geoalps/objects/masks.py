"""``TileMasks``: one tile's object masks and their per-mask records, filtered together.

Like segment_anything's ``MaskData``, every field is indexed by mask, so a filter can never get
masks and scores out of step. Masks are kept as crops to their bounding boxes: memory follows the
objects' area, not (number of masks x tile area), which matters for engines that propose
thousands of regions.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


class LabelCrops(Sequence):
    """The boolean crops of masks that are regions of one label image, each made when it is read
    (``labels[box] == label_id``): region engines give thousands of regions a tile and the
    pipeline reads their crops only on the SAM-style paths, so building them all up front cost a
    pass over every box for nothing (about 3 % of a classical tile). A crop read twice is built
    twice; it always reflects the label image as it is then (clipping the label image to valid
    data clips the crops)."""

    def __init__(self, labels: np.ndarray, boxes: np.ndarray, label_ids: np.ndarray) -> None:
        self.labels, self.boxes, self.label_ids = labels, boxes, label_ids

    def __len__(self) -> int:
        return len(self.label_ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r0, c0, r1, c1 = self.boxes[i]
        return self.labels[r0:r1, c0:c1] == self.label_ids[i]

    def subset(self, index: np.ndarray) -> "LabelCrops":
        """The crops of the masks at ``index``, still unbuilt."""
        return LabelCrops(self.labels, self.boxes[index], self.label_ids[index])


@dataclass
class TileMasks:
    """Per-mask boolean crops, their boxes in tile pixels and per-mask scores.

    ``boxes`` is (N, 4) int (row0, col0, row1, col1), half-open; ``crops[i]`` has the box's shape.
    ``embedding`` is an optional engine feature map (C, h, w) whose grid covers the tile scaled by
    ``embedding_extent`` = (rows, cols) cells (SAM pads its input, so only part of the map is
    image); engines without one leave it None.

    ``labels`` is set when the masks are disjoint regions of one label image (region engines):
    mask i is ``labels == label_ids[i]``. Vectorising and features then take one pass over the
    image instead of one call per mask (thousands of masks per tile).

    ``fit_labels`` (optional, with ``labels``): a coarser label image of the same tile whose
    regions each hold whole masks; the k-means learns its classes from those regions and then
    classifies every mask on its own (the classical engine's regions before ``--classical-split``
    cut them: cut pieces make purer objects, but fitting on them lets one spread-out cover take
    two classes).
    """

    crops: Sequence[np.ndarray]  #: a list, or :class:`LabelCrops` for masks of a label image
    boxes: np.ndarray
    scores: np.ndarray
    tile_shape: tuple[int, int]
    embedding: np.ndarray | None = None
    embedding_extent: tuple[int, int] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    label_ids: np.ndarray | None = None
    fit_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if not len(self.crops) == len(self.boxes) == len(self.scores):
            raise ValueError("one crop, box and score per mask")
        if self.labels is not None:
            self.label_ids = np.asarray(self.label_ids, dtype=np.int64).reshape(-1)
            if len(self.label_ids) != len(self.crops):
                raise ValueError("one label id per mask")

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def areas(self) -> np.ndarray:
        if self.labels is not None and len(self):
            return np.bincount(self.index_image().ravel(), minlength=len(self) + 1)[1:].astype(np.int64)
        return np.array([int(np.count_nonzero(c)) for c in self.crops], dtype=np.int64)

    def select(self, keep: np.ndarray) -> "TileMasks":
        """A new TileMasks holding only the masks chosen by a boolean or index array."""
        index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, int)
        lazy = isinstance(self.crops, LabelCrops)
        return TileMasks(
            crops=self.crops.subset(index) if lazy else [self.crops[i] for i in index],
            boxes=self.boxes[index],
            scores=self.scores[index],
            tile_shape=self.tile_shape,
            embedding=self.embedding,
            embedding_extent=self.embedding_extent,
            extra={name: values[index] for name, values in self.extra.items()},
            labels=self.labels,
            label_ids=None if self.labels is None else self.label_ids[index],
            fit_labels=self.fit_labels,
        )

    def fit_regions(self) -> "TileMasks | None":
        """The ``fit_labels`` regions made of this tile's kept masks, each mask in the region
        that holds most of its pixels (a small piece joined across a region edge counts once),
        as disjoint masks; None without ``fit_labels``. Cost: two passes over the tile."""
        if self.fit_labels is None or self.labels is None or not len(self):
            return None
        index = self.index_image()
        inside = index > 0
        n_fit = int(self.fit_labels.max()) + 1
        codes, counts = np.unique(index[inside].astype(np.int64) * n_fit + self.fit_labels[inside], return_counts=True)
        mask_of, region_of = codes // n_fit, codes % n_fit
        order = np.lexsort((-counts, mask_of))  # per mask, its largest share first
        first = order[np.r_[True, mask_of[order][1:] != mask_of[order][:-1]]]
        region = np.zeros(len(self) + 1, dtype=np.int32)
        region[mask_of[first]] = region_of[first]
        labels = region[index]
        return TileMasks.from_labels(labels, np.zeros(n_fit, dtype=np.float32))

    def index_image(self) -> np.ndarray:
        """For disjoint masks (``labels`` set): int32 image holding mask index + 1, 0 where no
        kept mask lies; the input to one-pass vectorising and per-mask statistics."""
        if self.labels is None:
            raise ValueError("index_image needs disjoint masks from a label image")
        lookup = np.zeros(int(self.labels.max()) + 1, dtype=np.int32)
        lookup[self.label_ids] = np.arange(1, len(self) + 1, dtype=np.int32)
        return lookup[self.labels]

    def dense(self, i: int) -> np.ndarray:
        """Mask ``i`` pasted into a full tile-sized boolean array."""
        out = np.zeros(self.tile_shape, dtype=bool)
        r0, c0, r1, c1 = self.boxes[i]
        out[r0:r1, c0:c1] = self.crops[i]
        return out

    @classmethod
    def from_labels(cls, labels: np.ndarray, scores_by_label: np.ndarray) -> "TileMasks":
        """From a label image (0 = no object; 1..L = regions) and one score per label (index 0
        unused), as region-growing engines produce. Costs one pass over the image; the crops are
        made only when read (:class:`LabelCrops`)."""
        regions = ndimage.find_objects(labels)
        ids = np.array([i for i, region in enumerate(regions, start=1) if region is not None], dtype=np.int64)
        boxes = np.array([(r[0].start, r[1].start, r[0].stop, r[1].stop) for r in regions if r is not None],
                         dtype=np.int64).reshape(-1, 4)
        scores = np.asarray(scores_by_label, dtype=np.float32)[ids]
        return cls(LabelCrops(labels, boxes, ids), boxes, scores, tile_shape=labels.shape, labels=labels,
                   label_ids=ids)


def filter_by_area(
    tile_masks: TileMasks, valid: np.ndarray, min_area_px: int, max_area_frac: float
) -> TileMasks:
    """Clip every mask to valid data, then drop masks smaller than ``min_area_px`` or larger than
    ``max_area_frac`` of the tile's valid area (ALPS's area threshold: huge masks are background,
    not objects)."""
    if not len(tile_masks):
        return tile_masks
    if not valid.all():
        if not isinstance(tile_masks.crops, LabelCrops):  # crops made from the label image are clipped with it
            for crop, (r0, c0, r1, c1) in zip(tile_masks.crops, tile_masks.boxes):
                crop &= valid[r0:r1, c0:c1]
        if tile_masks.labels is not None:  # keep the label image in step with the clipped crops
            tile_masks.labels[~valid] = 0
        if tile_masks.fit_labels is not None:
            tile_masks.fit_labels[~valid] = 0
    areas = tile_masks.areas
    max_area = max_area_frac * max(int(valid.sum()), 1)
    return tile_masks.select((areas >= max(min_area_px, 1)) & (areas <= max_area))


def remove_duplicates(tile_masks: TileMasks, iou_thresh: float = 0.7) -> TileMasks:
    """Greedy non-maximum suppression on mask IoU: highest score first, drop masks that overlap a
    kept one by more than ``iou_thresh``. Only pairs whose boxes meet are compared, on the box
    intersection, so the cost follows object overlap rather than N^2 full-tile comparisons."""
    if len(tile_masks) < 2:
        return tile_masks
    order = np.argsort(-tile_masks.scores, kind="stable")
    boxes, crops, areas = tile_masks.boxes, tile_masks.crops, tile_masks.areas
    kept: list[int] = []
    for i in order:
        r0, c0, r1, c1 = boxes[i]
        duplicate = False
        for j in kept:
            q0, d0, q1, d1 = boxes[j]
            ir0, ic0, ir1, ic1 = max(r0, q0), max(c0, d0), min(r1, q1), min(c1, d1)
            if ir0 >= ir1 or ic0 >= ic1:
                continue
            inter = np.count_nonzero(
                crops[i][ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0]
                & crops[j][ir0 - q0 : ir1 - q0, ic0 - d0 : ic1 - d0]
            )
            union = areas[i] + areas[j] - inter
            if union and inter / union > iou_thresh:
                duplicate = True
                break
        if not duplicate:
            kept.append(int(i))
    return tile_masks.select(np.sort(np.asarray(kept, dtype=np.int64)))
