"""Evaluation of geoalps outputs against ground truth (``geoalps evaluate``).

    >>> from geoalps.evaluation import evaluate_pseudo_labels, write_json
    >>> result = evaluate_pseudo_labels("labels.tif", "truth.gt.tif")
    >>> result["many_to_one_miou"], result["hungarian_miou"], result["nmi"]

Pixel metrics come from one contingency table (``pseudo_labels``), the prediction and the ground
truth are read onto the scored grid block by block (``grid``) and scored in one pass (``truth``,
with the segment oracle of ``oracle``), results are written by ``report``.
"""
from __future__ import annotations

from geoalps.evaluation.pseudo_labels import (ContingencyAccumulator, best_iou, contingency, nmi_from_table,
                                              object_recall, pseudo_label_scores, raster_objects)
from geoalps.evaluation.report import confusion_figure, row_normalised, write_json
from geoalps.evaluation.truth import evaluate_pseudo_labels

__all__ = [
    "ContingencyAccumulator", "best_iou", "confusion_figure", "contingency", "evaluate_pseudo_labels",
    "nmi_from_table", "object_recall", "pseudo_label_scores", "raster_objects", "row_normalised", "write_json",
]
