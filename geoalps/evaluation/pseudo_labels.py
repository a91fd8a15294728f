"""Pseudo-label scores: how well unnamed pseudo-classes match a ground truth (DESIGN.md, "Pseudo-label metrics").

Everything is computed from one contingency table of pixel counts, so a raster of any size is
scored in bounded memory: :class:`ContingencyAccumulator` adds rasterio blocks one at a time and
:func:`pseudo_label_scores` turns the finished table into the metrics.

Table layout (``table, pred_ids, true_ids``):
    ``table[i, j]`` counts valid pixels (truth not nodata) with pseudo-class ``pred_ids[i]`` and
    true class ``true_ids[j]``; the last row (``table[-1]``) counts valid pixels where the
    prediction is nodata. Ids are sorted ascending, and only ids seen on valid pixels appear.

Object recall works on polygons (shapely 2 geometries) instead: :func:`object_recall`, with
:func:`raster_objects` to turn an instance or class raster into true objects.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from geoalps.errors import InputError, OptionError

#: Value spans up to this size are indexed directly (O(pixels)); wider spans fall back to np.unique.
_DIRECT_SPAN = 1 << 16
#: Integer dtypes rasterio.features.shapes reads as they are; others are cast to int32.
_SHAPES_DTYPES = ("uint8", "uint16", "int16", "int32")


# --------------------------------------------------------------------------------------------
# contingency table


def _dense_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids, index of each value into them). O(n) for compact ids, else a sort."""
    if values.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < _DIRECT_SPAN:
        offset = values - lo
        present = np.bincount(offset, minlength=hi - lo + 1) > 0
        remap = np.cumsum(present) - 1
        return np.flatnonzero(present).astype(np.int64) + lo, remap[offset]
    ids, index = np.unique(values, return_inverse=True)
    return ids.astype(np.int64), index.ravel().astype(np.int64)


def _valid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """True where ``values`` is not ``nodata`` (None: everywhere)."""
    if nodata is None:
        return np.ones(values.shape, bool)
    return values != nodata


def _as_ids(values: np.ndarray, what: str) -> np.ndarray:
    """Class ids as a flat int64 array; class arrays must hold integers."""
    values = np.asarray(values)
    if values.dtype.kind not in "uib":
        raise InputError(f"{what}: {values.dtype} values; class arrays hold integer ids")
    return values.ravel().astype(np.int64, copy=False)


class ContingencyAccumulator:
    """Pixel counts of (pseudo-class, true class) pairs, added block by block.

    Memory is one block plus the (K+1) x C table: ids are collected as they appear, so neither
    K nor C has to be known in advance. Each :meth:`add` is O(block pixels) for compact ids
    (one np.bincount over int64 codes).
    """

    def __init__(self, pred_nodata: float | None = None, truth_nodata: float | None = None) -> None:
        self.pred_nodata = pred_nodata
        self.truth_nodata = truth_nodata
        self._pred_ids = np.zeros(0, np.int64)
        self._true_ids = np.zeros(0, np.int64)
        self._table = np.zeros((1, 0), np.int64)

    def add(self, pred_block: np.ndarray, truth_block: np.ndarray, *,
            pred_valid: np.ndarray | None = None, truth_valid: np.ndarray | None = None) -> None:
        """Count one block; ``*_valid`` masks (True = has a value) add to the nodata values."""
        if np.shape(pred_block) != np.shape(truth_block):
            raise InputError(f"prediction block {np.shape(pred_block)} and truth block "
                               f"{np.shape(truth_block)} differ in shape")
        pred, truth = _as_ids(pred_block, "prediction"), _as_ids(truth_block, "truth")
        keep = _valid(truth, self.truth_nodata)
        if truth_valid is not None:
            keep &= np.asarray(truth_valid, bool).ravel()
        has_pred = _valid(pred, self.pred_nodata)
        if pred_valid is not None:
            has_pred &= np.asarray(pred_valid, bool).ravel()
        pred, truth, has_pred = pred[keep], truth[keep], has_pred[keep]
        true_ids, true_index = _dense_index(truth)
        pred_ids, pred_index = _dense_index(pred[has_pred])
        rows = np.full(truth.size, pred_ids.size, np.int64)  # last row: no prediction
        rows[has_pred] = pred_index
        n_rows, n_cols = pred_ids.size + 1, true_ids.size
        counts = np.bincount(rows * n_cols + true_index, minlength=n_rows * n_cols).reshape(n_rows, n_cols)
        self._merge(counts, pred_ids, true_ids)

    def _merge(self, counts: np.ndarray, pred_ids: np.ndarray, true_ids: np.ndarray) -> None:
        """Add a block's table into the running one, growing it when new ids appear."""
        all_pred, all_true = np.union1d(self._pred_ids, pred_ids), np.union1d(self._true_ids, true_ids)
        if all_pred.size != self._pred_ids.size or all_true.size != self._true_ids.size:
            grown = np.zeros((all_pred.size + 1, all_true.size), np.int64)
            rows = np.append(np.searchsorted(all_pred, self._pred_ids), all_pred.size)
            grown[np.ix_(rows, np.searchsorted(all_true, self._true_ids))] = self._table
            self._pred_ids, self._true_ids, self._table = all_pred, all_true, grown
        rows = np.append(np.searchsorted(self._pred_ids, pred_ids), self._pred_ids.size)
        self._table[np.ix_(rows, np.searchsorted(self._true_ids, true_ids))] += counts

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(table, pred_ids, true_ids), copies: the accumulator can keep adding."""
        return self._table.copy(), self._pred_ids.copy(), self._true_ids.copy()


def contingency(pred: np.ndarray, truth: np.ndarray, pred_nodata: float | None = None,
                truth_nodata: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(table, pred_ids, true_ids) for two whole arrays of the same shape (see the module notes).

    Cost: O(pixels) time, a few int64 copies of the arrays in memory; use
    :class:`ContingencyAccumulator` block by block for rasters larger than memory.
    """
    acc = ContingencyAccumulator(pred_nodata, truth_nodata)
    acc.add(pred, truth)
    return acc.result()


# --------------------------------------------------------------------------------------------
# scores from the table


def _many_to_one(overlap: np.ndarray) -> np.ndarray:
    """Column of each row's majority true class (ties: lowest id), -1 for rows without pixels."""
    if overlap.shape[1] == 0:
        return np.full(overlap.shape[0], -1, np.int64)
    best = np.argmax(overlap, axis=1)  # argmax returns the first maximum: the lowest true id
    return np.where(overlap.sum(axis=1) > 0, best, -1)


def _hungarian(overlap: np.ndarray) -> np.ndarray:
    """Column matched to each row by a one-to-one assignment maximising total overlap, or -1.

    Pairs with zero overlap are left unmatched: they change no IoU (the intersection is empty
    either way) and would only clutter the mapping. Cost: O(min(K, C)^2 max(K, C)).
    """
    from scipy.optimize import linear_sum_assignment

    match = np.full(overlap.shape[0], -1, np.int64)
    if overlap.size == 0:
        return match
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    hit = overlap[rows, cols] > 0
    match[rows[hit]] = cols[hit]
    return match


def _mapped_iou(overlap: np.ndarray, true_px: np.ndarray, mapping: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU per true class, hits per true class) when row k is predicted as class ``mapping[k]``.

    Unmapped rows (-1) and the nodata row predict nothing: their pixels are misses.
    """
    n_cols = overlap.shape[1]
    mapped = mapping >= 0
    rows, cols = np.flatnonzero(mapped), mapping[mapped]
    hits = np.bincount(cols, weights=overlap[rows, cols], minlength=n_cols)
    predicted = np.bincount(cols, weights=overlap[rows].sum(axis=1), minlength=n_cols)
    union = predicted + true_px - hits
    iou = np.divide(hits, union, out=np.zeros(n_cols), where=union > 0)
    return iou, hits


def _entropy(counts: np.ndarray) -> float:
    """Entropy (natural log) of a labelling given its class counts, as scikit-learn computes it."""
    counts = counts[counts > 0].astype(np.float64)
    if counts.size <= 1:
        return 0.0
    total = counts.sum()
    return float(-np.sum((counts / total) * (np.log(counts) - np.log(total))))


def nmi_from_table(overlap: np.ndarray) -> float | None:
    """scikit-learn's ``normalized_mutual_info_score`` (arithmetic) from a K x C count table.

    Same special cases: one cluster and one class gives 1.0, one of them alone gives 0.0; an
    empty table gives None (scikit-learn would say 1.0). Cost: O(non-zero cells).
    """
    overlap = np.asarray(overlap, np.int64)
    overlap = overlap[overlap.sum(axis=1) > 0][:, overlap.sum(axis=0) > 0]
    n_rows, n_cols = overlap.shape
    if overlap.size == 0:
        return None
    if n_rows == n_cols == 1:
        return 1.0
    if n_rows == 1 or n_cols == 1:
        return 0.0
    rows, cols = np.nonzero(overlap)
    cell = overlap[rows, cols].astype(np.float64)
    row_px, col_px = overlap.sum(axis=1).astype(np.float64), overlap.sum(axis=0).astype(np.float64)
    total = cell.sum()
    share = cell / total
    log_outer = -(np.log(row_px[rows]) + np.log(col_px[cols])) + 2 * np.log(total)
    terms = share * (np.log(cell) - np.log(total)) + share * log_outer
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    mi = float(np.clip(terms.sum(), 0.0, None))
    if mi == 0.0:
        return 0.0
    return float(mi / np.mean([_entropy(col_px), _entropy(row_px)]))


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if values.size else None


def _share_or_none(part: float, whole: float) -> float | None:
    return float(part / whole) if whole > 0 else None


def class_name_of(class_id: int, names: Sequence[str] | dict | None) -> str | None:
    """Name of a true class from a list (indexed by id) or a dict, None when unknown."""
    if names is None:
        return None
    if isinstance(names, dict):
        return names.get(class_id)
    return names[class_id] if 0 <= class_id < len(names) else None


def pseudo_label_scores(table: np.ndarray, pred_ids: Sequence[int] | None = None,
                        true_ids: Sequence[int] | None = None,
                        names: Sequence[str] | dict[int, str] | None = None) -> dict[str, Any]:
    """All pixel metrics of DESIGN.md from a contingency table, as a JSON-serialisable dict.

    Parameters
    ----------
    table : (K + 1, C) pixel counts; the last row is "prediction is nodata" (see module notes).
    pred_ids, true_ids : the ids of the rows (without the last) and columns; default 0..K-1, 0..C-1.
    names : true class names, a list indexed by id or a dict id -> name.

    Returns
    -------
    dict with many_to_one_miou, pixel_accuracy, hungarian_miou, hungarian_pixel_accuracy, purity,
    nmi, n_pseudo_classes, n_true_classes, valid_pixels, unpredicted_pixels, per_class (one entry a
    true class present in the truth), mapping ({"many_to_one": {pseudo id: true id}, "hungarian":
    {...}}, keys as strings). Scores that are undefined (no valid pixels) are None.

    Notes
    -----
    Many-to-one ties go to the lowest true id. The Hungarian assignment is scipy's
    ``linear_sum_assignment`` on the id-sorted table: deterministic, but among assignments of
    equal total overlap it is scipy's pick, not a lowest-id rule. Cost: O(K C) plus the assignment.
    """
    table = np.asarray(table, np.int64)
    overlap = table[:-1]
    n_pseudo, n_true = overlap.shape
    pred_ids = np.arange(n_pseudo) if pred_ids is None else np.asarray(pred_ids, np.int64)
    true_ids = np.arange(n_true) if true_ids is None else np.asarray(true_ids, np.int64)
    true_px = table.sum(axis=0)
    valid = int(true_px.sum())
    present = true_px > 0
    m2o, hung = _many_to_one(overlap), _hungarian(overlap)
    iou_m2o, hits_m2o = _mapped_iou(overlap, true_px, m2o)
    iou_hung, hits_hung = _mapped_iou(overlap, true_px, hung)
    per_class = [
        {"true_class": int(true_ids[c]), "name": class_name_of(int(true_ids[c]), names), "pixels": int(true_px[c]),
         "iou_many_to_one": float(iou_m2o[c]), "iou_hungarian": float(iou_hung[c]),
         "pseudo_classes": pred_ids[m2o == c].tolist(),
         "hungarian_pseudo_class": int(pred_ids[hung == c][0]) if (hung == c).any() else None}
        for c in np.flatnonzero(present)
    ]
    return {
        "many_to_one_miou": _mean_or_none(iou_m2o[present]),
        "pixel_accuracy": _share_or_none(hits_m2o.sum(), valid),
        "hungarian_miou": _mean_or_none(iou_hung[present]),
        "hungarian_pixel_accuracy": _share_or_none(hits_hung.sum(), valid),
        "purity": _share_or_none(hits_m2o.sum(), overlap.sum()),
        "nmi": nmi_from_table(overlap),
        "n_pseudo_classes": int((overlap.sum(axis=1) > 0).sum()),
        "n_true_classes": int(present.sum()),
        "valid_pixels": valid,
        "unpredicted_pixels": int(table[-1].sum()),
        "per_class": per_class,
        "mapping": {
            "many_to_one": {str(pred_ids[k]): int(true_ids[c]) for k, c in enumerate(m2o) if c >= 0},
            "hungarian": {str(pred_ids[k]): int(true_ids[c]) for k, c in enumerate(hung) if c >= 0},
        },
    }


# --------------------------------------------------------------------------------------------
# object recall


def _fixed(geoms: Iterable) -> np.ndarray:
    """Geometries as a shapely array with invalid ones repaired (make_valid only where needed)."""
    import shapely

    geoms = np.asarray(list(geoms) if not isinstance(geoms, np.ndarray) else geoms, dtype=object)
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    return geoms


def _box_iou(true_bounds: np.ndarray, pred_bounds: np.ndarray) -> np.ndarray:
    """IoU of axis-aligned boxes given as (n, 4) bounds arrays, pairwise row by row."""
    low = np.maximum(true_bounds[:, :2], pred_bounds[:, :2])
    high = np.minimum(true_bounds[:, 2:], pred_bounds[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area_t = (true_bounds[:, 2] - true_bounds[:, 0]) * (true_bounds[:, 3] - true_bounds[:, 1])
    area_p = (pred_bounds[:, 2] - pred_bounds[:, 0]) * (pred_bounds[:, 3] - pred_bounds[:, 1])
    union = area_t + area_p - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def best_iou(pred_polygons: Iterable, true_objects: Iterable, box: bool = False) -> np.ndarray:
    """For each true object, the highest IoU with any predicted polygon (0 where none meets it).

    One STRtree over the predictions and one vectorised query for all true objects; the exact
    intersections are computed only for the candidate pairs whose envelopes meet.
    ``box=True`` compares bounding boxes (tree crowns against box annotations).
    """
    import shapely

    pred, true = _fixed(pred_polygons), _fixed(true_objects)
    best = np.zeros(true.size)
    if pred.size == 0 or true.size == 0:
        return best
    if box:
        pred, true = shapely.envelope(pred), shapely.envelope(true)
    true_idx, pred_idx = shapely.STRtree(pred).query(true, predicate="intersects")
    if true_idx.size == 0:
        return best
    if box:
        iou = _box_iou(shapely.bounds(true[true_idx]), shapely.bounds(pred[pred_idx]))
    else:
        inter = shapely.area(shapely.intersection(true[true_idx], pred[pred_idx]))
        union = shapely.area(true[true_idx]) + shapely.area(pred[pred_idx]) - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.maximum.at(best, true_idx, iou)
    return best


def object_recall(pred_polygons: Iterable, true_objects: Iterable, iou_threshold: float = 0.5, *,
                  min_size_px: float = 64, pixel_area: float = 1.0, sizes_px: Sequence[float] | None = None,
                  box: bool = False) -> dict[str, Any]:
    """Share of true objects that some predicted polygon matches with IoU >= ``iou_threshold``.

    True objects smaller than ``min_size_px`` pixels are not counted (the default, 64 px, is the
    smallest mask geoalps writes). Sizes are ``sizes_px`` when given (exact pixel counts from
    :func:`raster_objects`), else geometry area / ``pixel_area``. Cost: see :func:`best_iou`.

    Returns
    -------
    dict with recall (None without objects), iou_threshold, min_size_px, box, n_true_objects,
    n_found, n_too_small, mean_best_iou.
    """
    import shapely

    true = _fixed(true_objects)
    sizes = np.asarray(sizes_px, np.float64) if sizes_px is not None else shapely.area(true) / abs(pixel_area)
    counted = sizes >= min_size_px - 1e-9 * max(1.0, min_size_px)
    best = best_iou(pred_polygons, true[counted], box=box)
    found = best >= iou_threshold
    return {
        "recall": _share_or_none(found.sum(), found.size),
        "iou_threshold": float(iou_threshold),
        "min_size_px": float(min_size_px),
        "box": bool(box),
        "n_true_objects": int(found.size),
        "n_found": int(found.sum()),
        "n_too_small": int((~counted).sum()),
        "mean_best_iou": _mean_or_none(best),
    }


def raster_objects(values: np.ndarray, transform, *, nodata: float | None = None, by: str = "component",
                   classes: Iterable[int] | None = None, min_size_px: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True objects of a class or instance raster: (geometries, values, sizes in pixels).

    ``by="component"``: each 4-connected region of one value is an object (class rasters).
    ``by="value"``: all pixels of one id form one object, possibly a MultiPolygon (instance
    rasters; 0 is background there). ``classes`` keeps only those values. Geometries are in the
    coordinates of ``transform``; regions smaller than ``min_size_px`` are dropped.
    Cost: the whole array in memory; time and memory grow with the number of polygon vertices
    (rasterio.features.shapes).
    """
    import shapely
    from rasterio import features

    if by not in ("component", "value"):
        raise OptionError(f"objects: by={by!r}; use 'component' or 'value'")
    values = np.asarray(values)
    mask = _valid(values, nodata)
    if by == "value":
        mask &= values != 0
    if classes is not None:
        mask &= np.isin(values, list(classes))
    data = values if values.dtype.name in _SHAPES_DTYPES else values.astype(np.int32)
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    parts, ids = [], []
    for geojson, value in features.shapes(data, mask=mask, connectivity=4, transform=transform):
        parts.append(shapely.geometry.shape(geojson))
        ids.append(int(value))
    parts, ids = np.asarray(parts, dtype=object), np.asarray(ids, np.int64)
    if by == "value" and ids.size:
        order = np.argsort(ids, kind="stable")
        parts, ids = parts[order], ids[order]
        ids, group = np.unique(ids, return_inverse=True)
        parts = shapely.multipolygons(parts, indices=group)
    sizes = np.rint(shapely.area(parts) / pixel_area).astype(np.int64) if parts.size else np.zeros(0, np.int64)
    keep = sizes >= min_size_px
    return parts[keep], ids[keep], sizes[keep]
