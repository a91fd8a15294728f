"""Segmentation scores: confusion matrix, IoU per class, mIoU, overall accuracy.

Conventions (also those of ``geoalps evaluate``): pixels that are nodata in the ground truth are
not scored; a prediction nodata pixel on valid ground truth is a miss for the true class; a class
whose union (ground truth or prediction, on scored pixels) is empty does not count in the mean.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from geoalps.errors import InputError


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, n_classes: int, ignore: int | None = None) -> np.ndarray:
    """(n_classes, n_classes + 1) counts, rows = truth, columns = prediction, last column = no prediction.

    Truth pixels equal to ``ignore`` or outside 0..n_classes-1 are skipped; predictions outside
    0..n_classes-1 land in the last column. Cost: one bincount, O(pixels).
    """
    truth = np.asarray(truth).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = (truth >= 0) & (truth < n_classes)
    if ignore is not None:
        keep &= truth != ignore
    truth, pred = truth[keep], pred[keep]
    pred = np.where((pred >= 0) & (pred < n_classes), pred, n_classes)
    counts = np.bincount(truth * (n_classes + 1) + pred, minlength=n_classes * (n_classes + 1))
    return counts.reshape(n_classes, n_classes + 1)


def scores(confusion: np.ndarray) -> dict[str, Any]:
    """mIoU, per-class IoU (only classes with a non-empty union) and overall accuracy."""
    n = confusion.shape[0]
    tp = np.diag(confusion[:, :n]).astype(np.float64)
    truth_total = confusion.sum(axis=1)
    pred_total = confusion[:, :n].sum(axis=0)
    union = truth_total + pred_total - tp
    per_class = {str(k): float(tp[k] / union[k]) for k in range(n) if union[k] > 0}
    total = confusion.sum()
    return {
        "miou": float(np.mean(list(per_class.values()))) if per_class else float("nan"),
        "per_class_iou": per_class,
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "pixels_scored": int(total),
    }


def evaluate(prediction: str | os.PathLike, truth: str | os.PathLike, rows_per_read: int = 1024) -> dict[str, Any]:
    """Score a class raster against a ground-truth raster on the same grid.

    Cost: both rasters are read once in full-width strips of ``rows_per_read`` rows; memory is a
    few strips plus a dict of (truth, prediction) pair counts. Both are opened and read through
    :mod:`geoalps.inputs.scene` (``open_dataset``/``read_pixels``), so a missing, unreadable or
    truncated raster is a one-line ``InputError`` naming it.

    Returns:
        dict with ``miou``, ``per_class_iou`` (class id as a string -> IoU), ``overall_accuracy``,
        ``pixels_scored``.
    """
    from rasterio.windows import Window

    from geoalps.inputs.scene import open_dataset, read_pixels

    prediction, truth = str(prediction), str(truth)
    with open_dataset(prediction, shown=prediction) as psrc, open_dataset(truth, shown=truth) as tsrc:
        if (psrc.width, psrc.height) != (tsrc.width, tsrc.height):
            raise InputError(
                f"{truth}: {tsrc.width}x{tsrc.height} px but {prediction} is {psrc.width}x{psrc.height}; "
                "evaluate needs both on one grid"
            )
        if psrc.crs and tsrc.crs and (psrc.crs != tsrc.crs or not psrc.transform.almost_equals(tsrc.transform, 1e-6 * abs(tsrc.transform.a))):
            raise InputError(f"{truth}: not on the grid (CRS/transform) of {prediction}")
        for src, path in ((psrc, prediction), (tsrc, truth)):
            if np.dtype(src.dtypes[0]).kind not in "ui":
                raise InputError(f"{path}: {src.dtypes[0]} pixels; class rasters hold integer ids")
        pred_nodata, truth_nodata = psrc.nodata, tsrc.nodata
        pairs: dict[tuple[int, int], int] = {}
        for row in range(0, tsrc.height, rows_per_read):
            window = Window(0, row, tsrc.width, min(rows_per_read, tsrc.height - row))
            t = read_pixels(tsrc, window, shown=truth, indexes=1).ravel().astype(np.int64)
            p = read_pixels(psrc, window, shown=prediction, indexes=1).ravel().astype(np.int64)
            keep = np.ones(t.shape, bool) if truth_nodata is None else t != int(truth_nodata)
            t, p = t[keep], p[keep]
            if pred_nodata is not None:
                p = np.where(p == int(pred_nodata), -1, p)
            codes, counts = np.unique(t * (1 << 20) + (p + 1), return_counts=True)
            for code, count in zip(codes.tolist(), counts.tolist()):
                key = (code >> 20, (code & ((1 << 20) - 1)) - 1)
                pairs[key] = pairs.get(key, 0) + count
    if not pairs:
        raise InputError(f"{truth}: every pixel is nodata; nothing to score")
    n = max(max(t, p) for t, p in pairs) + 1
    confusion = np.zeros((n, n + 1), dtype=np.int64)
    for (t, p), count in pairs.items():
        confusion[t, p if p >= 0 else n] += count
    return scores(confusion)
