"""The plugin object: registers the Processing provider, and in the desktop a menu entry that
opens "Install or update geoalps" (Plugins > GeoALPS)."""
from __future__ import annotations

from qgis.core import QgsApplication

from .provider import GeoAlpsProvider

MENU = "&GeoALPS"
INSTALL_ALGORITHM = "geoalps:installgeoalps"


class GeoAlpsPlugin:
    """Adds the GeoALPS provider; qgis_process calls initProcessing only, the desktop both."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: GeoAlpsProvider | None = None
        self.install_action = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        if self.provider is None:
            # Keep the reference: a provider only owned by the registry loses its Python side.
            self.provider = GeoAlpsProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS's name)
        self.initProcessing()
        if self.iface is None or self.install_action is not None:
            return
        from qgis.PyQt.QtWidgets import QAction

        self.install_action = QAction(self.provider.icon(), "Install or update geoalps…",
                                      self.iface.mainWindow())
        self.install_action.triggered.connect(self.open_installer)
        self.iface.addPluginToMenu(MENU, self.install_action)

    def open_installer(self) -> None:
        import processing

        processing.execAlgorithmDialog(INSTALL_ALGORITHM, {})

    def unload(self) -> None:
        if self.install_action is not None:
            self.iface.removePluginMenu(MENU, self.install_action)
            self.install_action.deleteLater()
            self.install_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
