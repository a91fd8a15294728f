"""What every GeoALPS algorithm shares: locate the CLI, read inputs as files, run, style."""
from __future__ import annotations

import os
from typing import Callable

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from ..limits import VECTOR_SUFFIXES
from ..outputs import style_on_load
from ..runner import ChildExit, run_geoalps
from ..settings import resolve_cli



class GeoAlpsAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses declare their id, title, help and tags as class attributes
    (``ALGORITHM_ID``, ``DISPLAY_NAME``, ``HELP``, ``TAGS``), their parameters, and build the
    geoalps argument list."""

    ALGORITHM_ID = ""
    DISPLAY_NAME = ""
    HELP = ""
    TAGS: tuple[str, ...] = ()
    #: The Processing outputs that are files, in the order ``arguments`` returns them.
    OUTPUTS: tuple[str, ...] = ()
    #: Those of ``OUTPUTS`` styled as QGIS loads them (geoalps's categorized styles).
    STYLED: tuple[str, ...] = ()

    def processAlgorithm(  # noqa: N802 (QGIS's name)
        self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict:
        """``arguments``, ``run_command``, style, ``results``: every GeoALPS algorithm, once (as QGIS's own
        GDAL provider keeps its algorithms' processAlgorithm in their base class)."""
        args, files = self.arguments(parameters, context, feedback)
        self.run_command(args, files, feedback)
        written = dict(zip(self.OUTPUTS, files))
        for name in self.STYLED:
            style_on_load(written[name], context)
        return self.results(written, files, feedback)

    def arguments(self, parameters: dict, context: QgsProcessingContext,
                  feedback: QgsProcessingFeedback | None = None) -> tuple[list[str], list[str]]:
        """The geoalps argument list and the files it writes (``OUTPUTS`` first, in order)."""
        raise NotImplementedError

    def run_command(self, args: list[str], files: list[str], feedback: QgsProcessingFeedback) -> None:
        """Run geoalps (a subclass may wrap it: Auto-label's resume)."""
        self.run_cli(args, files, feedback)

    def results(self, written: dict, files: list[str], feedback: QgsProcessingFeedback) -> dict:
        """The algorithm's outputs: each written file (None when not asked for)."""
        return {name: path or None for name, path in written.items()}

    def createInstance(self):  # noqa: N802 (QGIS's name)
        return type(self)()

    def name(self) -> str:
        return self.ALGORITHM_ID

    def displayName(self) -> str:  # noqa: N802 (QGIS's name)
        return self.DISPLAY_NAME

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS's name)
        return self.HELP

    def tags(self):
        return list(self.TAGS)

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

    def geoalps_output_file(
        self, parameters: dict, name: str, context: QgsProcessingContext,
        feedback: QgsProcessingFeedback | None = None,
    ) -> str:
        """The GeoPackage behind a vector layer parameter holding a ``geoalps label`` output."""
        layer = self.parameterAsVectorLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, name))
        return geoalps_output_path(layer, feedback)

    def output_file(
        self, parameters: dict, name: str, context: QgsProcessingContext, extensions: tuple[str, ...]
    ) -> str:
        """A layer destination path with one of ``extensions`` (e.g. ``.gpkg``), or ``""`` if unset."""
        return self._checked_path(self.parameterAsOutputLayer(parameters, name, context), name, extensions)

    def file_output(
        self, parameters: dict, name: str, context: QgsProcessingContext, extensions: tuple[str, ...]
    ) -> str:
        """A file destination (picture, JSON) with one of ``extensions``, or ``""`` if unset."""
        return self._checked_path(self.parameterAsFileOutput(parameters, name, context), name, extensions)

    def _checked_path(self, path: str, name: str, extensions: tuple[str, ...]) -> str:
        """``path`` if it ends with one of ``extensions`` (its folder created), ``""`` if unset."""
        if not path:
            return ""
        if not path.lower().endswith(extensions):
            wanted = " or ".join(extensions)
            raise QgsProcessingException(
                f"GeoALPS: output '{self.parameterDefinition(name).description()}' must be a "
                f"{wanted} file, got '{path}'."
            )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return path

    def run_cli(
        self, arguments: list[str], outputs: list[str], feedback: QgsProcessingFeedback,
        keep: tuple[str, ...] = (), on_line: Callable[[str, str], None] | None = None,
        accept_exit_codes: tuple[int, ...] = (),
    ) -> ChildExit:
        """Run ``geoalps <arguments>``; failures and cancel surface as QgsProcessingException.
        ``keep``: paths left in place when it fails (a work folder); ``on_line`` and
        ``accept_exit_codes``: see run_geoalps."""
        command = resolve_cli() + arguments
        return run_geoalps(command, feedback, outputs, keep=keep, on_line=on_line, accept_exit_codes=accept_exit_codes)


def feature_count(gpkg_path: str, layer: str = "masks") -> int:
    """Features in a written layer (QGIS's own OGR, no wheels); -1 if unreadable."""
    options = QgsVectorLayer.LayerOptions()
    options.loadDefaultStyle = False
    vector = QgsVectorLayer(f"{gpkg_path}|layername={layer}", layer, "ogr", options)
    count = vector.featureCount() if vector.isValid() else -1
    del vector
    return int(count)


def geoalps_output_path(layer: QgsVectorLayer, feedback: QgsProcessingFeedback | None = None) -> str:
    """The ``.gpkg`` of a layer that shows a geoalps output (its ``masks`` layer is what geoalps
    reads, with the scene paths in the file's metadata, so it cannot be a copy)."""
    path, parts = _ogr_parts(layer)
    if not path.lower().endswith(".gpkg") or not os.path.isfile(path):
        raise QgsProcessingException(
            f"GeoALPS: '{layer.name()}' is not a GeoPackage file ({layer.source()}); give the "
            "GeoPackage written by Auto-label raster (geoalps label)."
        )
    if parts.get("subset") and feedback is not None:
        feedback.pushWarning(
            f"GeoALPS: the filter on '{layer.name()}' is ignored: geoalps reads the whole GeoPackage."
        )
    return path


def layer_path(layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback | None = None,
               fields: tuple[str, ...] = ()) -> str:
    """A file geoalps can read for ``layer``: a raster's GDAL file, or a vector layer's file when
    geoalps would read exactly that layer from it (the file's first layer, no filter, no unsaved
    edits, a format geoalps reads as vector data); otherwise the layer (only ``fields``, if
    given) written to a temporary GeoPackage with QGIS's own writer. Call it from the main
    thread (``prepareAlgorithm``) when it may write a project layer."""
    if isinstance(layer, QgsRasterLayer):
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"GeoALPS: '{layer.name()}' is a {layer.providerType()} layer; geoalps needs a "
                "raster file (GeoTIFF or any GDAL-readable file). Save it to a file first."
            )
        return layer.source().split("|")[0]
    if not isinstance(layer, QgsVectorLayer):
        raise QgsProcessingException(f"GeoALPS: '{layer.name()}' is neither a raster nor a vector layer.")
    direct = _readable_as_is(layer)
    if direct:
        return direct
    return write_temporary_geopackage(layer, context, feedback, fields)


def _ogr_parts(layer: QgsVectorLayer) -> tuple[str, dict]:
    if layer.providerType() != "ogr":
        return "", {}
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    return parts.get("path") or "", parts


def _readable_as_is(layer: QgsVectorLayer) -> str:
    """The layer's file if geoalps (which reads a file's first layer, unfiltered) sees the same
    features; ``""`` otherwise."""
    path, parts = _ogr_parts(layer)
    if not path or not os.path.isfile(path) or not path.lower().endswith(VECTOR_SUFFIXES):
        return ""
    if parts.get("subset") or layer.subsetString() or layer.isModified():
        return ""
    wanted_name, wanted_id = parts.get("layerName") or "", parts.get("layerId")
    if not wanted_name and wanted_id in (None, 0, "0"):
        return path
    try:
        from osgeo import ogr  # QGIS's own GDAL, not the wheels
    except ImportError:
        return ""
    dataset = ogr.Open(path)
    first = dataset.GetLayer(0).GetName() if dataset is not None and dataset.GetLayerCount() else None
    dataset = None
    return path if first is not None and first == wanted_name and wanted_id in (None, 0, "0") else ""


def write_temporary_geopackage(layer: QgsVectorLayer, context: QgsProcessingContext,
                               feedback: QgsProcessingFeedback | None = None,
                               fields: tuple[str, ...] = ()) -> str:
    """``layer`` (its filter and unsaved edits applied; only ``fields`` if given) as a temporary
    GeoPackage, in its own CRS."""
    path = QgsProcessingUtils.generateTempFilename(f"{_safe_name(layer.name())}.gpkg")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = _safe_name(layer.name())
    if fields:
        indices = [layer.fields().indexOf(f) for f in fields]
        options.attributes = [i for i in indices if i >= 0]
    error, message, written, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, path, context.transformContext(), options
    )
    if error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"GeoALPS: could not write '{layer.name()}' to {path}: {message}")
    if feedback is not None:
        feedback.pushInfo(f"GeoALPS: '{layer.name()}' is not a file geoalps can read as is; "
                          f"wrote it to {written or path}.")
    return written or path


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or "layer"
