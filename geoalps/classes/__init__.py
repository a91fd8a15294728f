"""What the pseudo-classes of a labelling output look like, so a person can tell what class 3 is.

``gallery.py``: :func:`make_gallery`, one picture (or HTML page) per run with every class's colour,
object count, area share, mean band signature and example chips, over a class-coloured overview.

``make_gallery`` is imported lazily, so importing this package does not pull in matplotlib.
"""
from __future__ import annotations

__all__ = ["make_gallery"]


def __getattr__(name: str):
    if name == "make_gallery":
        from geoalps.classes.gallery import make_gallery

        return make_gallery
    raise AttributeError(f"module 'geoalps.classes' has no attribute {name!r}")
