"""geoalps:classgallery — "Pseudo-class gallery", a wrapper of ``geoalps classes gallery``."""
from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterVectorLayer,
)

from ..limits import (
    GALLERY_CHIPS_DEFAULT,
    GALLERY_CHIPS_MAX,
    GALLERY_CHIPS_MIN,
    GALLERY_RANDOM_CHIPS_DEFAULT,
    SEED_DEFAULT,
)
from .base import GeoAlpsAlgorithm, layer_path

HELP = """One picture of every pseudo-class of an "Auto-label raster" output, to see what the classes are before naming them: per class its colour, object count, share of the area, mean signature over all bands, example chips cut from the scene, and the scene coloured by class.

Scene rasters: only needed when the scenes are no longer where the labelling run read them (the GeoPackage records their paths).
Chips per class: the objects closest to the class centre, plus (advanced) a few drawn at random (at most the chips per class).
Output: a PNG picture, or an HTML page with the images inlined (it opens in the Results Viewer).

The work runs in your geoalps environment, made by "Install or update geoalps" (GeoALPS > Setup) or set in Processing > Options > Providers > GeoALPS or in the GEOALPS_CLI environment variable. Cancelling stops it and leaves no output."""


class ClassGalleryAlgorithm(GeoAlpsAlgorithm):
    """Pseudo-class gallery: a PNG or HTML overview of each pseudo-class of a labelling output."""

    INPUT = "INPUT"
    SCENES = "SCENES"
    CHIPS = "CHIPS"
    RANDOM_CHIPS = "RANDOM_CHIPS"
    SEED = "SEED"
    OUTPUT = "OUTPUT"
    OUTPUTS = (OUTPUT,)

    ALGORITHM_ID = "classgallery"
    DISPLAY_NAME = "Pseudo-class gallery"
    HELP = HELP
    TAGS = ("pseudo-label", "gallery", "chips", "overview", "report", "k-means")

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS's name)
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.INPUT, "Pseudo-label polygons (GeoPackage from Auto-label raster)",
            types=[QgsProcessing.TypeVectorPolygon],
        ))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.SCENES, "Scene raster(s), if moved since labelling (optional)",
            layerType=QgsProcessing.TypeRaster, optional=True,
        ))
        self.addParameter(QgsProcessingParameterNumber(
            self.CHIPS, "Example chips per class", type=QgsProcessingParameterNumber.Integer,
            defaultValue=GALLERY_CHIPS_DEFAULT, minValue=GALLERY_CHIPS_MIN, maxValue=GALLERY_CHIPS_MAX,
        ))
        random_chips = QgsProcessingParameterNumber(
            self.RANDOM_CHIPS, "Of which drawn at random", type=QgsProcessingParameterNumber.Integer,
            defaultValue=GALLERY_RANDOM_CHIPS_DEFAULT, minValue=0, maxValue=GALLERY_CHIPS_MAX, optional=True,
        )
        seed = QgsProcessingParameterNumber(
            self.SEED, "Random seed", type=QgsProcessingParameterNumber.Integer,
            defaultValue=SEED_DEFAULT, minValue=0, optional=True,
        )
        for parameter in (random_chips, seed):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Gallery", fileFilter="PNG pictures (*.png);;HTML pages (*.html)",
        ))

    def arguments(
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback | None = None
    ) -> tuple[list[str], list[str]]:
        """The ``geoalps classes gallery`` argument list and the file it writes."""
        labels = self.geoalps_output_file(parameters, self.INPUT, context, feedback)
        picture = self.file_output(parameters, self.OUTPUT, context, (".png", ".html"))
        chips = self.parameterAsInt(parameters, self.CHIPS, context)
        random_chips = GALLERY_RANDOM_CHIPS_DEFAULT
        if parameters.get(self.RANDOM_CHIPS) is not None:
            random_chips = self.parameterAsInt(parameters, self.RANDOM_CHIPS, context)
        args = ["classes", "gallery", labels, "-o", picture,
                "--chips", str(chips), "--random-chips", str(min(random_chips, chips)),
                "--seed", str(self.parameterAsInt(parameters, self.SEED, context) or 0)]
        for scene in self.parameterAsLayerList(parameters, self.SCENES, context) or []:
            args += ["--scene", layer_path(scene, context)]
        args += ["--overwrite"]
        return args, [picture]
