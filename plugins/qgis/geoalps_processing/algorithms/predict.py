"""geoalps:predict — "Predict segmentation", a wrapper of ``geoalps predict``."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorDestination,
)

from .base import GeoAlpsAlgorithm

HELP = """Applies a segmentation model trained with "geoalps train" to a raster.

Writes a class raster on the input's grid (class ids, nodata 255, with a colour table) and optionally the classes as polygons in a GeoPackage.

The work runs in your geoalps environment (the "geoalps" command or that environment's Python), made by "Install or update geoalps" (GeoALPS > Setup) or set in Processing > Options > Providers > GeoALPS or in the GEOALPS_CLI environment variable. Cancelling stops it and leaves no output."""


class PredictAlgorithm(GeoAlpsAlgorithm):
    """Predict segmentation: a trained geoalps model applied to a raster, on its exact grid."""

    MODEL = "MODEL"
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"
    POLYGONS = "POLYGONS"
    OUTPUTS = STYLED = (OUTPUT, POLYGONS)

    ALGORITHM_ID = "predict"
    DISPLAY_NAME = "Predict segmentation"
    HELP = HELP
    TAGS = ("segmentation", "inference", "model", "classification", "swin")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model checkpoint (from geoalps train)",
            behavior=QgsProcessingParameterFile.File,
            fileFilter="geoalps models (*.pt *.pth);;All files (*)",
        ))
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Class raster"))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.POLYGONS, "Class polygons", type=QgsProcessing.TypeVectorPolygon,
            optional=True, createByDefault=False,
        ))

    def arguments(self, parameters: dict, context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback | None = None) -> tuple[list[str], list[str]]:
        """The ``geoalps predict`` argument list and the files it writes (raster first)."""
        model = self.parameterAsFile(parameters, self.MODEL, context)
        scene = self.raster_file(parameters, self.INPUT, context)
        raster = self.output_file(parameters, self.OUTPUT, context, (".tif", ".tiff"))
        polygons = self.output_file(parameters, self.POLYGONS, context, (".gpkg",))
        args = ["predict", model, scene, "-o", raster]
        if polygons:
            args += ["--polygons", polygons]
        args += ["--overwrite", "--progress-lines"]
        return args, [raster, polygons]
