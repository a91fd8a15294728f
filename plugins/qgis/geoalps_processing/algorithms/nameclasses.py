"""geoalps:nameclasses — "Name pseudo-classes from examples", a wrapper of ``geoalps classes name``."""
from __future__ import annotations

import json
import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingParameterVectorLayer,
    QgsProcessingUtils,
)

from .base import GeoAlpsAlgorithm, layer_path

HELP = """Gives the pseudo-classes of an "Auto-label raster" output names people can read, from a few examples or from a plain mapping, and writes a renamed copy.

Examples: points or polygons (any CRS; e.g. drawn in a scratch layer) with a field holding a name ("building", "water"...). Each example votes for the pseudo-class of the objects under it, weighted by their area: a point for the object that holds it, a polygon for the objects whose representative point it holds. A class takes the name with the most votes; classes no example touches keep "class N" (or, with the k-means model, the name of the nearest named class); classes given the same name become one class in the output.
A class the examples call by several names is split between them object by object: each of its objects takes the name of the nearest example object of that class in mean band values, read back from the scene the labelling run read (uncheck "Split" to name whole classes only).
Or a mapping instead of examples: "0=building,3=building,5=water" (class id = name, comma separated).

The output is a GeoPackage (layer "masks") with class_id and class_name fields added, styled by name. The log shows the naming report: per class its name and votes, conflicts (one class voted for under several names) and examples under no object.
k-means model (optional): the "Fitted k-means model" of the labelling run; the names are stored in it (the file is updated), so that later runs of "Auto-label raster" reusing that model write the names on new scenes.

The work runs in your geoalps environment, made by "Install or update geoalps" (GeoALPS > Setup) or set in Processing > Options > Providers > GeoALPS or in the GEOALPS_CLI environment variable. Cancelling stops it and leaves no output."""


class NameClassesAlgorithm(GeoAlpsAlgorithm):
    """Name pseudo-classes from example points/polygons (or a mapping): a renamed, styled copy."""

    INPUT = "INPUT"
    EXAMPLES = "EXAMPLES"
    NAME_FIELD = "NAME_FIELD"
    NAMES = "NAMES"
    KMEANS_MODEL = "KMEANS_MODEL"
    SPLIT = "SPLIT"
    OUTPUT = "OUTPUT"
    OUTPUTS = STYLED = (OUTPUT,)
    CLASS_NAMES = "CLASS_NAMES"
    NAMED_CLASSES = "NAMED_CLASSES"
    UNUSED_EXAMPLES = "UNUSED_EXAMPLES"
    CONFLICTS = "CONFLICTS"

    ALGORITHM_ID = "nameclasses"
    DISPLAY_NAME = "Name pseudo-classes from examples"
    HELP = HELP
    TAGS = ("pseudo-label", "class names", "rename", "examples", "legend", "k-means")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.INPUT, "Pseudo-label polygons (GeoPackage from Auto-label raster)",
            types=[QgsProcessing.TypeVectorPolygon],
        ))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.EXAMPLES, "Example points or polygons",
            types=[QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True,
        ))
        self.addParameter(QgsProcessingParameterField(
            self.NAME_FIELD, "Name field of the examples", defaultValue="name",
            parentLayerParameterName=self.EXAMPLES, optional=True,
        ))
        self.addParameter(QgsProcessingParameterBoolean(
            self.SPLIT, "Split a class the examples call by several names, object by object (reads the scene)",
            defaultValue=True,
        ))
        self.addParameter(QgsProcessingParameterString(
            self.NAMES, "Or a mapping instead of examples (e.g. 0=building,3=water)",
            defaultValue="", optional=True,
        ))
        self.addParameter(QgsProcessingParameterFile(
            self.KMEANS_MODEL, "k-means model to store the names in (optional; updated in place)",
            behavior=QgsProcessingParameterFile.File,
            fileFilter="k-means models (*.joblib);;All files (*)", optional=True,
        ))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, "Named pseudo-label polygons", type=QgsProcessing.TypeVectorPolygon,
        ))
        self.addOutput(QgsProcessingOutputString(self.CLASS_NAMES, "Class names (comma separated)"))
        self.addOutput(QgsProcessingOutputNumber(self.NAMED_CLASSES, "Number of named pseudo-classes"))
        self.addOutput(QgsProcessingOutputNumber(self.UNUSED_EXAMPLES, "Examples under no object"))
        self.addOutput(QgsProcessingOutputNumber(self.CONFLICTS, "Pseudo-classes voted for under several names"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        has_examples = parameters.get(self.EXAMPLES) not in (None, "")
        mapping = (self.parameterAsString(parameters, self.NAMES, context) or "").strip()
        if has_examples == bool(mapping):
            return False, (
                "Give either example points/polygons (with their name field) or a mapping such as "
                "0=building,3=water, not both."
            )
        if has_examples:
            field = (self.parameterAsString(parameters, self.NAME_FIELD, context) or "").strip()
            if not field:
                return False, "Choose the examples' name field."
            layer = self.parameterAsVectorLayer(parameters, self.EXAMPLES, context)
            if layer is not None and layer.fields().indexOf(field) < 0:
                names = ", ".join(layer.fields().names()) or "none"
                return False, f"The examples '{layer.name()}' have no field '{field}' (fields: {names})."
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(  # noqa: N802 (QGIS's name)
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> bool:
        # The main thread: a memory or filtered example layer is written to a file here.
        self._examples = ""
        if parameters.get(self.EXAMPLES) not in (None, ""):
            layer = self.parameterAsVectorLayer(parameters, self.EXAMPLES, context)
            if layer is None:
                raise QgsProcessingException(self.invalidSourceError(parameters, self.EXAMPLES))
            field = self.parameterAsString(parameters, self.NAME_FIELD, context).strip()
            self._examples = layer_path(layer, context, feedback, fields=(field,))
        return True

    def arguments(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback | None = None,
        report: str = "",
    ) -> tuple[list[str], list[str]]:
        """The ``geoalps classes name`` argument list and the files it writes: the GeoPackage and
        the naming report (a temporary JSON unless ``report`` is given)."""
        # The report table goes to the log as the CLI prints it; the JSON copy gives the outputs.
        report = report or QgsProcessingUtils.generateTempFilename("naming_report.json")
        labels = self.geoalps_output_file(parameters, self.INPUT, context, feedback)
        output = self.output_file(parameters, self.OUTPUT, context, (".gpkg",))
        args = ["classes", "name", labels, "-o", output]
        examples = getattr(self, "_examples", "")
        if examples:
            args += ["--examples", examples,
                     "--field", self.parameterAsString(parameters, self.NAME_FIELD, context).strip()]
            if not self.parameterAsBool(parameters, self.SPLIT, context):
                args += ["--no-split"]
        else:
            args += ["--names", self.parameterAsString(parameters, self.NAMES, context).strip()]
        kmeans = self.parameterAsFile(parameters, self.KMEANS_MODEL, context)
        if kmeans:
            args += ["--kmeans-model", kmeans]
        if report:
            args += ["--report", report]
        args += ["--overwrite"]
        return args, [output, report]

    def results(self, written: dict, files: list[str], feedback: QgsProcessingFeedback) -> dict:
        """The renamed GeoPackage and what the naming report says (warnings in the log)."""
        output, report_path = files
        report = _read_report(report_path)
        classes = report.get("classes", [])
        unused = report.get("unused_examples", [])
        conflicts = [row for row in classes if row.get("conflict")]
        for row in conflicts:
            votes = ", ".join(f"{n} {v:g}" for n, v in row.get("votes", {}).items())
            split = ", ".join(f"{n} {c}" for n, c in (row.get("split") or {}).items())
            outcome = (f"its objects were split between them ({split} objects)" if split
                       else f"it is named '{row.get('name')}'")
            feedback.pushWarning(
                f"GeoALPS: pseudo-class {row.get('pseudo_class')} was shown under several names "
                f"({votes}); {outcome}."
            )
        if unused:
            feedback.pushWarning(
                f"GeoALPS: {len(unused)} example(s) lie under no object (feature numbers "
                f"{', '.join(map(str, unused))}, counted from 0); they did not vote."
            )
        names = report.get("merged_names", [])
        return {
            self.OUTPUT: output,
            self.CLASS_NAMES: ",".join(names),
            self.NAMED_CLASSES: sum(1 for row in classes if row.get("named")),
            self.UNUSED_EXAMPLES: len(unused),
            self.CONFLICTS: len(conflicts),
        }


def _read_report(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}
    finally:
        if os.path.exists(path):
            os.remove(path)
