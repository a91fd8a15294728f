"""geoalps: unsupervised labels for georeferenced imagery (ALPS: SAM masks + online k-means).

    >>> import geoalps
    >>> gdf = geoalps.label(["a.tif", "b.tif"], "labels.gpkg", engine="classical", classes=8)

``label`` is imported lazily so ``import geoalps`` (and ``geoalps --help``) stays fast.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["label", "GeoAlpsError", "__version__"]

from geoalps.errors import GeoAlpsError


def __getattr__(name: str):
    if name == "label":
        from geoalps.labelling.run import label

        return label
    raise AttributeError(f"module 'geoalps' has no attribute {name!r}")
