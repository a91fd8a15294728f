"""geoalps:evaluate — "Evaluate pseudo-labels", a wrapper of ``geoalps evaluate``."""
from __future__ import annotations

import json
import math

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..limits import (
    EVALUATE_IOU_DEFAULT,
    EVALUATE_MIN_OBJECT_PX_DEFAULT,
    EVALUATE_OBJECTS_BY,
)
from .base import GeoAlpsAlgorithm, geoalps_output_path, layer_path

HELP = """Scores pseudo-labels against ground truth.

Prediction: the class raster or the GeoPackage of "Auto-label raster" (or the class raster of "Predict segmentation"). Truth: a class raster, or polygons with a class field (numbers or names). Pseudo-classes are matched to true classes first: many-to-one (each pseudo-class to its majority true class) and one-to-one (Hungarian) mIoU, pixel accuracy, purity and NMI. A "Predict segmentation" raster, whose ids are the truth's classes, is also scored as is (mIoU, overall accuracy; in the JSON).

True objects (optional): an instance or class raster, or polygons; the object recall is the share of true objects some output polygon overlaps with IoU at least the threshold. Advanced: raster objects as connected components or one object per value, which values are objects (e.g. "1" for the building class), bounding boxes instead of shapes (tree crowns given as boxes), the smallest object counted, and a truth value that is not scored.

Outputs: every figure in a JSON file, an optional confusion-matrix picture (PNG), and the headline numbers as algorithm outputs (for models and scripts); the log shows a per-class summary.

The work runs in your geoalps environment, made by "Install or update geoalps" (GeoALPS > Setup) or set in Processing > Options > Providers > GeoALPS or in the GEOALPS_CLI environment variable. Cancelling stops it and leaves no output."""

#: Output name -> key of the CLI's JSON.
SCORES = {
    "MANY_TO_ONE_MIOU": ("many_to_one_miou", "Many-to-one mIoU"),
    "PIXEL_ACCURACY": ("pixel_accuracy", "Pixel accuracy (many-to-one)"),
    "HUNGARIAN_MIOU": ("hungarian_miou", "Hungarian (one-to-one) mIoU"),
    "NMI": ("nmi", "Normalized mutual information"),
    "PURITY": ("purity", "Purity"),
}


class EvaluateAlgorithm(GeoAlpsAlgorithm):
    """Evaluate pseudo-labels: matched mIoU, accuracy, NMI (and object recall) against truth."""

    PREDICTION = "PREDICTION"
    TRUTH = "TRUTH"
    TRUTH_FIELD = "TRUTH_FIELD"
    TRUTH_NODATA = "TRUTH_NODATA"
    OBJECTS = "OBJECTS"
    IOU = "IOU"
    OBJECTS_BY = "OBJECTS_BY"
    OBJECT_CLASSES = "OBJECT_CLASSES"
    BOX = "BOX"
    MIN_OBJECT_PX = "MIN_OBJECT_PX"
    OUTPUT = "OUTPUT"
    FIGURE = "FIGURE"
    OUTPUTS = (OUTPUT, FIGURE)
    OBJECT_RECALL = "OBJECT_RECALL"

    ALGORITHM_ID = "evaluate"
    DISPLAY_NAME = "Evaluate pseudo-labels"
    HELP = HELP
    TAGS = ("evaluation", "accuracy", "miou", "iou", "nmi", "hungarian", "confusion matrix", "pseudo-label")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        layers = [QgsProcessing.TypeRaster, QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterMapLayer(
            self.PREDICTION, "Prediction (class raster or geoalps GeoPackage)", types=layers,
        ))
        self.addParameter(QgsProcessingParameterMapLayer(
            self.TRUTH, "Ground truth (class raster, or polygons with a class field)", types=layers,
        ))
        self.addParameter(QgsProcessingParameterField(
            self.TRUTH_FIELD, "Class field of polygon truth", parentLayerParameterName=self.TRUTH,
            optional=True,
        ))
        self.addParameter(QgsProcessingParameterMapLayer(
            self.OBJECTS, "True objects for object recall (raster or polygons; optional)",
            types=layers, optional=True,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.IOU, "Object IoU threshold", type=QgsProcessingParameterNumber.Double,
            defaultValue=EVALUATE_IOU_DEFAULT, minValue=0.0, maxValue=1.0,
        ))
        advanced = [
            QgsProcessingParameterString(
                self.TRUTH_NODATA, "Truth value not scored (empty: the raster's nodata)",
                defaultValue="", optional=True,
            ),
            QgsProcessingParameterEnum(
                self.OBJECTS_BY, "Raster objects are", options=["connected components", "one per value"],
                defaultValue=0, optional=True,
            ),
            QgsProcessingParameterString(
                self.OBJECT_CLASSES, "Only these values of the objects raster are objects (e.g. 1 or 1,2)",
                defaultValue="", optional=True,
            ),
            QgsProcessingParameterBoolean(
                self.BOX, "Compare bounding boxes (objects given as boxes)", defaultValue=False, optional=True,
            ),
            QgsProcessingParameterNumber(
                self.MIN_OBJECT_PX, "Smallest true object counted (pixels)",
                type=QgsProcessingParameterNumber.Integer, defaultValue=EVALUATE_MIN_OBJECT_PX_DEFAULT,
                minValue=0, optional=True,
            ),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Scores (JSON)", fileFilter="JSON files (*.json)",
        ))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.FIGURE, "Confusion matrix picture", fileFilter="PNG pictures (*.png)",
            optional=True, createByDefault=False,
        ))
        for name, (_, description) in SCORES.items():
            self.addOutput(QgsProcessingOutputNumber(name, description))
        self.addOutput(QgsProcessingOutputNumber(self.OBJECT_RECALL, "Object recall (with true objects)"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        classes = (self.parameterAsString(parameters, self.OBJECT_CLASSES, context) or "").strip()
        if classes and _object_classes(classes) is None:
            return False, f"Object values must be whole numbers separated by commas, got '{classes}'."
        truth = self.parameterAsLayer(parameters, self.TRUTH, context)
        if isinstance(truth, QgsVectorLayer):
            field = (self.parameterAsString(parameters, self.TRUTH_FIELD, context) or "").strip()
            if not field:
                return False, f"Polygon truth '{truth.name()}' needs its class field (Class field of polygon truth)."
            if truth.fields().indexOf(field) < 0:
                names = ", ".join(truth.fields().names()) or "none"
                return False, f"The truth '{truth.name()}' has no field '{field}' (fields: {names})."
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(  # noqa: N802 (QGIS's name)
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> bool:
        # The main thread: a memory or filtered truth/objects layer is written to a file here.
        prediction = self._layer(parameters, self.PREDICTION, context)
        if isinstance(prediction, QgsVectorLayer):
            self._prediction = geoalps_output_path(prediction, feedback)
        else:
            self._prediction = layer_path(prediction, context, feedback)
        truth = self._layer(parameters, self.TRUTH, context)
        self._truth_field = (self.parameterAsString(parameters, self.TRUTH_FIELD, context) or "").strip()
        if isinstance(truth, QgsVectorLayer):  # its class field was checked in checkParameterValues
            self._truth = layer_path(truth, context, feedback, fields=(self._truth_field,))
        else:
            self._truth = layer_path(truth, context, feedback)
            self._truth_field = ""
        self._objects = ""
        if parameters.get(self.OBJECTS) not in (None, ""):
            self._objects = layer_path(self._layer(parameters, self.OBJECTS, context), context, feedback)
        return True

    def _layer(self, parameters: dict, name: str, context: QgsProcessingContext):
        layer = self.parameterAsLayer(parameters, name, context)
        if not isinstance(layer, (QgsRasterLayer, QgsVectorLayer)):
            raise QgsProcessingException(
                f"GeoALPS: could not load '{parameters.get(name)}' ({self.parameterDefinition(name).description()})."
            )
        return layer

    def arguments(self, parameters: dict, context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback | None = None) -> tuple[list[str], list[str]]:
        """The ``geoalps evaluate`` argument list and the files it writes (JSON first)."""
        scores = self.file_output(parameters, self.OUTPUT, context, (".json",))
        figure = self.file_output(parameters, self.FIGURE, context, (".png",))
        args = ["evaluate", self._prediction, self._truth, "--json", scores]
        if figure:
            args += ["--figure", figure]
        if self._truth_field:
            args += ["--truth-field", self._truth_field]
        nodata = (self.parameterAsString(parameters, self.TRUTH_NODATA, context) or "").strip()
        if nodata:
            args += ["--truth-nodata", nodata]
        if self._objects:
            by = EVALUATE_OBJECTS_BY[self.parameterAsEnum(parameters, self.OBJECTS_BY, context)]
            args += ["--objects", self._objects, "--objects-by", by,
                     "--iou", repr(self.parameterAsDouble(parameters, self.IOU, context))]
            for value in _object_classes(self.parameterAsString(parameters, self.OBJECT_CLASSES, context) or "") or []:
                args += ["--object-class", str(value)]
            if self.parameterAsBool(parameters, self.BOX, context):
                args += ["--box"]
            if parameters.get(self.MIN_OBJECT_PX) is not None:
                args += ["--min-object-px", str(self.parameterAsInt(parameters, self.MIN_OBJECT_PX, context))]
        args += ["--overwrite"]
        return args, [scores, figure]

    def results(self, written: dict, files: list[str], feedback: QgsProcessingFeedback) -> dict:
        """The scores file and figure, and the scores read back from the JSON."""
        scores, figure = files
        try:
            with open(scores, encoding="utf-8") as handle:
                result = json.load(handle)
        except (OSError, ValueError) as exc:
            raise QgsProcessingException(f"GeoALPS: could not read the scores {scores}: {exc}") from exc
        outputs = {self.OUTPUT: scores, self.FIGURE: figure or None}
        for name, (key, _) in SCORES.items():
            outputs[name] = _number(result.get(key))
        recall = result.get("object_recall") or {}
        outputs[self.OBJECT_RECALL] = _number(recall.get("recall")) if isinstance(recall, dict) else None
        return outputs


def _number(value) -> float | None:
    """A JSON score as a float; None when geoalps had none (null, or not a finite number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _object_classes(text: str) -> list[int] | None:
    """``"1, 2"`` -> ``[1, 2]``; ``[]`` for empty text; None if a value is not a whole number."""
    values = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(int(part))
        except ValueError:
            return None
    return values
