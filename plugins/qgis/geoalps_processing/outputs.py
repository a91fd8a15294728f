"""Give the loaded outputs their geoalps look.

Processing loads result layers without their default style (for speed), so the categorized
style the CLI stored in the GeoPackage's ``layer_styles`` table and the class raster's colour
table are applied here, after the layer is added to the project.

Class rasters (``label --raster-out``, ``predict``) follow the tag contract of
``geoalps/outputs/raster.py``, the one writer of them: band 1 carries ``n_classes`` (K, ids
0..K-1) and ``class_names`` (the K names joined with ``;``). The plugin cannot import geoalps
(QGIS's Python must not load its torch/rasterio wheels), so it reads the contract itself with
QGIS's GDAL; the constants below mirror that module's.
"""
from __future__ import annotations

from collections import deque

from qgis.core import (
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsVectorLayer,
)

#: Band-1 tags of geoalps's class-raster contract (geoalps.outputs.raster: N_CLASSES_TAG,
#: CLASS_NAMES_TAG, NAMES_SEPARATOR).
N_CLASSES_TAG = "n_classes"
CLASS_NAMES_TAG = "class_names"
NAMES_SEPARATOR = ";"


def apply_default_vector_style(layer: QgsVectorLayer) -> bool:
    """Load the GeoPackage's default (database) style; True when a categorized renderer results."""
    renderer = layer.renderer()
    if renderer is None or renderer.type() != "categorizedSymbol":
        layer.loadDefaultStyle()
        layer.triggerRepaint()
    renderer = layer.renderer()
    return renderer is not None and renderer.type() == "categorizedSymbol"


def apply_palette(layer: QgsRasterLayer) -> bool:
    """Render the class raster with one legend entry per class; True when a palette results.

    First the ``.qml`` sidecar geoalps writes beside the raster (class names included); else
    band 1's colour table cut to the ``n_classes`` the raster's metadata records (a uint8
    GeoTIFF's table always has 256 entries, mostly unused black), labelled with its
    ``class_names`` tag when there is one (``label --raster-out`` and ``predict`` write it).
    """
    _, found = layer.loadDefaultStyle()
    renderer = layer.renderer()
    if found and renderer is not None and renderer.type() == "paletted":
        layer.triggerRepaint()
        return True
    provider = layer.dataProvider()
    if provider is None:
        return False
    classes = QgsPalettedRasterRenderer.colorTableToClassData(provider.colorTable(1))
    if not classes:
        return False
    n_classes, names = _recorded_classes(layer.source())
    if n_classes:
        classes = [c for c in classes if 0 <= c.value < n_classes]
        for c in classes:
            index = int(c.value)
            c.label = names[index] if index < len(names) else f"class {index}"
    layer.setRenderer(QgsPalettedRasterRenderer(provider, 1, classes))
    layer.triggerRepaint()
    return True


def _recorded_classes(path: str) -> tuple[int, list[str]]:
    """``(n_classes, names)`` from the band-1 tags of geoalps's class-raster contract (see the
    module docstring), read with QGIS's own GDAL; ``(0, [])`` if absent."""
    try:
        from osgeo import gdal
    except ImportError:
        return 0, []
    dataset = gdal.Open(path.split("|")[0])
    if dataset is None:
        return 0, []
    band = dataset.GetRasterBand(1)
    count, names = band.GetMetadataItem(N_CLASSES_TAG), band.GetMetadataItem(CLASS_NAMES_TAG)
    band = dataset = None
    try:
        n_classes = int(count) if count else 0
    except ValueError:
        n_classes = 0
    return n_classes, (names.split(NAMES_SEPARATOR) if names else [])


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Styles one loaded layer. The context takes ownership and deletes it with itself, so each
    layer needs its own instance (a shared one is deleted twice and crashes QGIS)."""

    def postProcessLayer(  # noqa: N802 (QGIS's name)
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsVectorLayer):
            if not apply_default_vector_style(layer) and feedback is not None:
                feedback.pushInfo("GeoALPS: the GeoPackage has no categorized default style.")
        elif isinstance(layer, QgsRasterLayer):
            apply_palette(layer)


# Python references to recent stylers, so their Python side outlives the algorithm object
# until the GUI thread has loaded the layers (QGIS's documented pattern for post-processors).
_RECENT_STYLERS: deque[_Styler] = deque(maxlen=64)


def style_on_load(path: str, context: QgsProcessingContext) -> None:
    """If Processing will load ``path`` when the algorithm finishes, style it as it loads."""
    if path and context.willLoadLayerOnCompletion(path):
        styler = _Styler()
        _RECENT_STYLERS.append(styler)
        context.layerToLoadOnCompletionDetails(path).setPostProcessor(styler)
