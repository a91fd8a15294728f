"""The plugin object: only registers the Processing provider (there is no dock or menu)."""
from __future__ import annotations

from qgis.core import QgsApplication

from .provider import GeoAlpsProvider


class GeoAlpsPlugin:
    """Adds the GeoALPS provider; qgis_process calls initProcessing only, the desktop both."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: GeoAlpsProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        if self.provider is None:
            # Keep the reference: a provider only owned by the registry loses its Python side.
            self.provider = GeoAlpsProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS's name)
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
