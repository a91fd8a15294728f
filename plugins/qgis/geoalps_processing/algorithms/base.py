"""What every GeoALPS algorithm shares: locate the CLI, read inputs as files, run, style."""
from __future__ import annotations

import os

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsVectorLayer,
)

from ..runner import run_geoalps
from ..settings import resolve_cli


class GeoAlpsAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses declare parameters and build the geoalps argument list."""

    def createInstance(self):  # noqa: N802 (QGIS's name)
        return type(self)()

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802 (QGIS's name)
        return ""

    def raster_file(self, parameters: dict, name: str, context: QgsProcessingContext) -> str:
        """The file behind a raster layer parameter: the CLI reads files, not QGIS layers."""
        layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, name))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"GeoALPS: '{layer.name()}' is a {layer.providerType()} layer; geoalps needs a "
                "raster file (GeoTIFF or any GDAL-readable file). Save it to a file first."
            )
        return layer.source().split("|")[0]

    def output_file(
        self, parameters: dict, name: str, context: QgsProcessingContext, extensions: tuple[str, ...]
    ) -> str:
        """A destination path with one of ``extensions`` (e.g. ``.gpkg``), or ``""`` if unset."""
        path = self.parameterAsOutputLayer(parameters, name, context)
        if not path:
            return ""
        if not path.lower().endswith(extensions):
            wanted = " or ".join(extensions)
            raise QgsProcessingException(
                f"GeoALPS: output '{self.parameterDefinition(name).description()}' must be a "
                f"{wanted} file, got '{path}'."
            )
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        return path

    def run_cli(
        self, arguments: list[str], outputs: list[str], feedback: QgsProcessingFeedback
    ) -> None:
        """Run ``geoalps <arguments>``; failures and cancel surface as QgsProcessingException."""
        command = resolve_cli() + arguments
        run_geoalps(command, feedback, outputs)


def feature_count(gpkg_path: str, layer: str = "masks") -> int:
    """Features in a written layer (QGIS's own OGR, no wheels); -1 if unreadable."""
    options = QgsVectorLayer.LayerOptions()
    options.loadDefaultStyle = False
    vector = QgsVectorLayer(f"{gpkg_path}|layername={layer}", layer, "ogr", options)
    count = vector.featureCount() if vector.isValid() else -1
    del vector
    return int(count)
