"""geoalps: unsupervised labels for georeferenced imagery (ALPS: SAM masks + online k-means).

    >>> import geoalps
    >>> result = geoalps.label(["a.tif", "b.tif"], "labels.gpkg", engine="classical", classes=8)
    >>> result.stats["objects"], result.gdf.head()

The path of the data, one package a stage: ``inputs`` (scenes, tiles, bands) -> ``engines``
(object masks) -> ``objects`` (masks, features, polygons, seams) -> ``clustering`` (online
k-means) -> ``outputs`` (GeoPackage, label rasters, styles); ``labelling`` runs them over a scene,
``train`` pre-trains and fine-tunes on the result, ``cli`` is the ``geoalps`` command.

``label`` is imported lazily so ``import geoalps`` (and ``geoalps --help``) stays fast.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["label", "LabelOptions", "LabelResult", "RunOptions", "GeoAlpsError", "__version__"]

from geoalps.errors import GeoAlpsError
from geoalps.options import LabelOptions, RunOptions


def __getattr__(name: str):
    if name in ("label", "LabelResult"):
        from geoalps.labelling import run

        return getattr(run, name)
    raise AttributeError(f"module 'geoalps' has no attribute {name!r}")
