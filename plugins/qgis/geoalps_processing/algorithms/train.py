"""geoalps:pretrain and geoalps:train — wrappers of ``geoalps pretrain`` and ``geoalps train``.

Their parameters are built from the declared records of :mod:`..limits` (``TRAIN_OPTIONS`` and
friends, held against geoalps.train.options.TrainOptions and the CLI by the library's tests),
never written out here one by one.
"""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..limits import (FINETUNE_OPTIONS, PRETRAIN_OPTIONS, TRAIN_MODEL_OPTIONS, TRAIN_MODEL_SIZES, TRAIN_OBJECTIVES,
                      TRAIN_OPTIONS, TrainParameter, enum_help, train_arguments, train_problem)
from .base import GeoAlpsAlgorithm, layer_path

_COMMON_HELP = """Images: the scenes, all with the same bands; labels: one per image, in the same order{labels}.
Options are those of the command (see "geoalps {command} --help"); enums in qgis_process: model {models}{extra}.
Writes the model (.pt) and, beside it, a .metrics.csv with one row per epoch; a .last.pt is kept while it runs, for Resume.

The work runs in your geoalps environment (made by "Install or update geoalps", GeoALPS > Setup), in one process. Cancelling stops it and leaves no model."""


def declared_parameter(spec: TrainParameter) -> QgsProcessingParameterDefinition:
    """The Processing parameter of one declared record (every one optional with its default, so
    models saved before a parameter existed stay valid)."""
    if spec.kind in ("int", "float"):
        number = QgsProcessingParameterNumber.Integer if spec.kind == "int" else QgsProcessingParameterNumber.Double
        kwargs = {} if spec.minimum is None else {"minValue": spec.minimum}
        if spec.maximum is not None:
            kwargs["maxValue"] = spec.maximum
        parameter = QgsProcessingParameterNumber(spec.name, spec.description, type=number, defaultValue=spec.default,
                                                 optional=True, **kwargs)
    elif spec.kind == "bool":
        parameter = QgsProcessingParameterBoolean(spec.name, spec.description, defaultValue=spec.default, optional=True)
    elif spec.kind == "enum":
        parameter = QgsProcessingParameterEnum(spec.name, spec.description, options=list(spec.choices),
                                               defaultValue=spec.choices.index(spec.default), optional=True)
    elif spec.kind == "file":
        parameter = QgsProcessingParameterFile(spec.name, spec.description, behavior=QgsProcessingParameterFile.File,
                                               fileFilter="geoalps models (*.pt);;All files (*)", optional=True)
    else:
        parameter = QgsProcessingParameterString(spec.name, spec.description, defaultValue=spec.default, optional=True)
    if spec.advanced:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


class _TrainingAlgorithm(GeoAlpsAlgorithm):
    """Shared by Pre-train and Train: images, labels, the declared options, the model file."""

    IMAGES = "IMAGES"
    LABELS = "LABELS"
    OUTPUT = "OUTPUT"
    OUTPUTS = (OUTPUT,)

    COMMAND = ""
    LABEL_TYPE = QgsProcessing.TypeRaster
    LABELS_OPTIONAL = False
    OWN_OPTIONS: tuple[TrainParameter, ...] = ()

    @classmethod
    def declared(cls) -> tuple[TrainParameter, ...]:
        return TRAIN_MODEL_OPTIONS + cls.OWN_OPTIONS + TRAIN_OPTIONS

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterMultipleLayers(self.IMAGES, "Images", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.LABELS, self.LABELS_DESCRIPTION, self.LABEL_TYPE,
                                                               optional=self.LABELS_OPTIONAL))
        for spec in self.declared():
            self.addParameter(declared_parameter(spec))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, "Model", fileFilter="geoalps models (*.pt)"))

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's name)
        problem = train_problem(self.declared_values(parameters, context))  # geoalps's rule, before the run
        if problem:
            return False, problem
        return super().checkParameterValues(parameters, context)

    def declared_values(self, parameters: dict, context: QgsProcessingContext) -> dict:
        """Parameter name -> value of every declared parameter (enums as their text)."""
        values = {}
        for spec in self.declared():
            if parameters.get(spec.name) is None:
                continue  # absent: the declared default
            if spec.kind == "int":
                values[spec.name] = self.parameterAsInt(parameters, spec.name, context)
            elif spec.kind == "float":
                values[spec.name] = self.parameterAsDouble(parameters, spec.name, context)
            elif spec.kind == "bool":
                values[spec.name] = self.parameterAsBool(parameters, spec.name, context)
            elif spec.kind == "enum":
                values[spec.name] = spec.choices[self.parameterAsEnum(parameters, spec.name, context)]
            elif spec.kind == "file":
                values[spec.name] = self.parameterAsFile(parameters, spec.name, context) or ""
            else:
                values[spec.name] = (self.parameterAsString(parameters, spec.name, context) or "").strip()
        return values

    def arguments(self, parameters: dict, context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback | None = None) -> tuple[list[str], list[str]]:
        """The ``geoalps pretrain|train`` argument list and the model it writes."""
        images = [layer_path(layer, context, feedback) for layer in
                  self.parameterAsLayerList(parameters, self.IMAGES, context) or []]
        labels = [layer_path(layer, context, feedback) for layer in
                  self.parameterAsLayerList(parameters, self.LABELS, context) or []]
        if not images:
            raise QgsProcessingException("GeoALPS: give at least one image.")
        if labels and len(labels) != len(images):
            raise QgsProcessingException(f"GeoALPS: {len(images)} images but {len(labels)} label layers; "
                                         "give one label layer per image, in the same order.")
        model = self.file_output(parameters, self.OUTPUT, context, (".pt",))
        args = [self.COMMAND, "--images", *images]
        if labels:
            args += ["--labels", *labels]
        args += ["-o", model, *train_arguments(self.declared(), self.declared_values(parameters, context))]
        args += ["--overwrite", "--progress-lines"]
        return args, [model]


class PretrainAlgorithm(_TrainingAlgorithm):
    """Pre-train: a segmentation network on the pseudo-labels of Auto-label (ALPS) or by SimMIM."""

    ALGORITHM_ID = "pretrain"
    DISPLAY_NAME = "Pre-train segmentation model"
    COMMAND = "pretrain"
    LABELS_DESCRIPTION = "Pseudo-label rasters (from Auto-label; not needed for objective mim)"
    LABELS_OPTIONAL = True
    OWN_OPTIONS = PRETRAIN_OPTIONS
    TAGS = ("alps", "pre-training", "pseudo-label", "simmim", "swin", "segmentation")
    HELP = ("Pre-trains a Swin segmentation network on the pseudo-label rasters of Auto-label raster (ALPS) or by "
            "masked image modelling, for Train segmentation model to start from.\n\n"
            + _COMMON_HELP.format(labels=", on its grid (Auto-label's pseudo-label raster)", command="pretrain",
                                  models=enum_help(TRAIN_MODEL_SIZES), extra=f"; objective {enum_help(TRAIN_OBJECTIVES)}"))


class TrainAlgorithm(_TrainingAlgorithm):
    """Train: a segmentation network on ground truth, from a pre-trained model or from scratch."""

    ALGORITHM_ID = "train"
    DISPLAY_NAME = "Train segmentation model"
    COMMAND = "train"
    LABELS_DESCRIPTION = "Ground truth (class rasters on the image grid, or polygon layers)"
    LABEL_TYPE = QgsProcessing.TypeMapLayer
    OWN_OPTIONS = FINETUNE_OPTIONS
    TAGS = ("fine-tuning", "few labels", "swin", "segmentation", "training")
    HELP = ("Trains (fine-tunes) a Swin segmentation network on ground truth, from a model of Pre-train segmentation "
            "model or from scratch; Label fraction keeps a few scattered tile cells (the few-label case).\n\n"
            + _COMMON_HELP.format(labels=": class rasters on the image grid, or polygon layers (class from Label "
                                         "column, 0 where no polygon)", command="train",
                                  models=enum_help(TRAIN_MODEL_SIZES), extra=""))
