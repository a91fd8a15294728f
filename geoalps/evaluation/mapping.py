"""How predicted ids meet true ids (``geoalps evaluate --mapping``), and the names of true classes.

- ``many-to-one`` / ``hungarian``: the prediction's ids are pseudo-classes, matched to true classes
  (each to its majority class, or one-to-one); :func:`geoalps.evaluation.pseudo_label_scores`.
- ``identity``: the prediction's ids are the truth's (a supervised ``geoalps predict`` raster):
  plain mIoU, per-class IoU and overall accuracy, :func:`identity_scores`, under the JSON key
  ``identity``.

Without ``--mapping`` a ``geoalps predict`` raster (band description ``class``, the tag of
:mod:`geoalps.outputs.raster`) is scored by identity and everything else by many-to-one.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from geoalps.errors import InputError, OptionError
from geoalps.evaluation.pseudo_labels import class_name_of

MAPPING_CHOICES = ("identity", "many-to-one", "hungarian")
#: Band description of a class raster whose ids are the truth's classes (``geoalps predict``).
PREDICTED_CLASSES = "class"


def default_mapping(prediction: str | os.PathLike | None) -> str:
    """``identity`` for a ``geoalps predict`` raster, ``many-to-one`` for anything else (None: a
    vector prediction)."""
    from geoalps.inputs.scene import open_dataset

    if prediction is None:
        return "many-to-one"
    try:
        with open_dataset(prediction) as src:
            described = (src.descriptions[0] or "") if src.count else ""
    except InputError:  # not a raster: the reader says so, with the file's name
        return "many-to-one"
    return "identity" if described == PREDICTED_CLASSES else "many-to-one"


def check_mapping(mapping: str | None, prediction: str | os.PathLike | None) -> str:
    """The mapping asked for, or the prediction's default; an unknown one is an OptionError."""
    if mapping is None:
        return default_mapping(prediction)
    if mapping not in MAPPING_CHOICES:
        raise OptionError(f"--mapping must be one of {', '.join(MAPPING_CHOICES)}, got {mapping!r}")
    return mapping


def parse_class_names(text: str, what: str = "--truth-names") -> dict[int, str]:
    """``"1=water,2=developed"`` -> {1: "water", 2: "developed"}; a bad item is one OptionError.

    The same syntax as the ``CLASS_CODES`` tag some class rasters carry."""
    names: dict[int, str] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        key, sep, name = item.partition("=")
        key = key.strip()
        if not sep or not key.lstrip("-").isdigit() or not name.strip():
            raise OptionError(f"{what}: {item!r} is not CLASS=NAME (e.g. 1=water,2=developed)")
        names[int(key)] = name.strip()
    if not names:
        raise OptionError(f"{what}: no CLASS=NAME pairs given")
    return names


def gdal_category_names(path: str | os.PathLike) -> dict[int, str]:
    """Band-1 category names of a raster as GDAL holds them (``SetCategoryNames`` or a raster
    attribute table's name column), read through GDAL's own Python bindings (``osgeo``) when they
    import: rasterio has no API for either. {} without ``osgeo`` or without categories."""
    try:
        from osgeo import gdal
    except ImportError:
        return {}
    gdal.UseExceptions()
    try:
        dataset = gdal.Open(os.fspath(path))
        dataset.GetMetadata()  # GDAL 3.6's GTiff reads its .aux.xml (where categories live) only then
        band = dataset.GetRasterBand(1)
    except RuntimeError:
        return {}
    names = {k: str(n) for k, n in enumerate(band.GetCategoryNames() or []) if n}
    table = band.GetDefaultRAT()
    if table is not None and table.GetRowCount():
        usages = [table.GetUsageOfCol(c) for c in range(table.GetColumnCount())]
        name_col = next((c for c, u in enumerate(usages) if u == gdal.GFU_Name), None)
        value_col = next((c for c, u in enumerate(usages) if u in (gdal.GFU_MinMax, gdal.GFU_Min)), None)
        if name_col is not None:
            for row in range(table.GetRowCount()):
                value = table.GetValueAsInt(row, value_col) if value_col is not None else row
                name = table.GetValueAsString(row, name_col)
                if name:
                    names[int(value)] = name
    return names


def identity_scores(table, pred_ids: Sequence[int], true_ids: Sequence[int],
                    names: Sequence[str] | Mapping[int, str] | None = None) -> dict[str, Any]:
    """Scores of a prediction whose ids are the truth's, from the contingency table of
    :mod:`geoalps.evaluation.pseudo_labels` (the conventions of :mod:`geoalps.train.metrics`).

    Class ``c``'s IoU is ``n(c, c) / (truth px of c + predicted px of c - n(c, c))`` on scored
    pixels; a prediction nodata pixel is a miss. Classes predicted but absent from the truth count
    (IoU 0), classes with an empty union do not. Returns ``miou``, ``per_class`` (one row a class:
    ``class``, ``name``, ``iou``, ``truth_pixels``, ``predicted_pixels``), ``overall_accuracy``,
    ``pixels_scored``. Cost: O(K C).
    """
    import numpy as np

    table = np.asarray(table, np.int64)
    pred_ids, true_ids = np.asarray(pred_ids, np.int64), np.asarray(true_ids, np.int64)
    overlap = table[:-1]
    truth_px = dict(zip(true_ids.tolist(), table.sum(axis=0).tolist()))
    predicted_px = dict(zip(pred_ids.tolist(), overlap.sum(axis=1).tolist()))
    column = {c: j for j, c in enumerate(true_ids.tolist())}
    hits = {k: int(overlap[i, column[k]]) if k in column else 0 for i, k in enumerate(pred_ids.tolist())}
    rows = []
    for k in sorted(set(truth_px) | set(predicted_px)):
        t, p, h = int(truth_px.get(k, 0)), int(predicted_px.get(k, 0)), hits.get(k, 0)
        union = t + p - h
        if union > 0:
            rows.append({"class": k, "name": class_name_of(k, names) or None, "iou": h / union, "truth_pixels": t,
                         "predicted_pixels": p})
    total = int(table.sum())
    return {
        "miou": float(np.mean([r["iou"] for r in rows])) if rows else None,
        "per_class": rows,
        "overall_accuracy": sum(hits.values()) / total if total else None,
        "pixels_scored": total,
    }
