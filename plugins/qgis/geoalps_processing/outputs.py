"""Give the loaded outputs their geoalps look.

Processing loads result layers without their default style (for speed), so the categorized
style the CLI stored in the GeoPackage's ``layer_styles`` table and the class raster's colour
table are applied here, after the layer is added to the project.
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


def apply_default_vector_style(layer: QgsVectorLayer) -> bool:
    """Load the GeoPackage's default (database) style; True when a categorized renderer results."""
    renderer = layer.renderer()
    if renderer is None or renderer.type() != "categorizedSymbol":
        layer.loadDefaultStyle()
        layer.triggerRepaint()
    renderer = layer.renderer()
    return renderer is not None and renderer.type() == "categorizedSymbol"


def apply_palette(layer: QgsRasterLayer) -> bool:
    """Render band 1 with its colour table (class colours); True when a paletted renderer results."""
    renderer = layer.renderer()
    if renderer is not None and renderer.type() == "paletted":
        return True
    provider = layer.dataProvider()
    if provider is None:
        return False
    table = provider.colorTable(1)
    if not table:
        return False
    classes = QgsPalettedRasterRenderer.colorTableToClassData(table)
    if not classes:
        return False
    layer.setRenderer(QgsPalettedRasterRenderer(provider, 1, classes))
    layer.triggerRepaint()
    return True


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
