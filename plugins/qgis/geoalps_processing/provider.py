"""The "GeoALPS" Processing provider: its algorithms and its one setting (where geoalps is)."""
from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .settings import ENV_VAR, PROVIDER_GROUP, SETTING_CLI

_ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


class GeoAlpsProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "geoalps"

    def name(self) -> str:
        return "GeoALPS"

    def longName(self) -> str:  # noqa: N802 (QGIS's name)
        return "GeoALPS: unsupervised pseudo-labels from SAM masks and online k-means"

    def icon(self) -> QIcon:
        return QIcon(_ICON)

    def svgIconPath(self) -> str:  # noqa: N802 (QGIS's name)
        return _ICON

    def load(self) -> bool:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig, Setting
        except ImportError:  # no Processing plugin: the environment variable still works
            pass
        else:
            ProcessingConfig.settingIcons[PROVIDER_GROUP] = self.icon()
            ProcessingConfig.addSetting(Setting(
                PROVIDER_GROUP, SETTING_CLI,
                f"geoalps command, or the Python of the geoalps environment "
                f"(set by Install or update geoalps; the {ENV_VAR} environment variable takes "
                f"precedence)",
                "", valuetype=Setting.FILE,
                placeholder="e.g. ~/geoalps-env/bin/geoalps",
            ))
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        try:
            from processing.core.ProcessingConfig import ProcessingConfig
        except ImportError:
            return
        if SETTING_CLI in ProcessingConfig.settings:
            ProcessingConfig.removeSetting(SETTING_CLI)

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS's name)
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    def supportedOutputVectorLayerExtensions(self):  # noqa: N802 (QGIS's name)
        return ["gpkg"]

    def supportedOutputRasterLayerExtensions(self):  # noqa: N802 (QGIS's name)
        return ["tif"]

    def defaultVectorFileExtension(self, hasGeometry=True):  # noqa: N802 (QGIS's name)
        return "gpkg"

    def defaultRasterFileExtension(self):  # noqa: N802 (QGIS's name)
        return "tif"
