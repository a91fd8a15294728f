"""GeoALPS QGIS plugin: a Processing provider that runs the geoalps CLI as a subprocess.

Nothing here imports geoalps, torch or the rasterio/shapely wheels: they would clash with the
GDAL/GEOS/PROJ that QGIS links (see plugins/qgis/README.md in the repository).
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Entry point QGIS calls when the plugin is enabled (also in qgis_process, with no GUI)."""
    from .plugin import GeoAlpsPlugin

    return GeoAlpsPlugin(iface)
