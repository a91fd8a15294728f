"""Coordinate reference systems: one comparison and one unit rule for the whole package.

Outputs, evaluation and the engines all ask the same two questions of a scene's CRS (is it the
same as that one? how many metres is one of its units?); answering them here keeps a scene in
US feet or degrees treated alike everywhere. Costs: a CRS parse (well under a millisecond).
"""
from __future__ import annotations

import functools
import math


def as_crs(value):
    """A rasterio CRS from a rasterio/pyproj CRS, WKT or "EPSG:n"; None for None."""
    from rasterio.crs import CRS

    return None if value is None else CRS.from_user_input(value)


def same_crs(a, b) -> bool:
    """True when ``a`` and ``b`` (rasterio/pyproj CRS, WKT, "EPSG:n" or None) are the same CRS;
    two missing CRSs are the same, a missing and a present one are not."""
    a, b = as_crs(a), as_crs(b)
    return (a is None and b is None) or (a is not None and b is not None and a == b)


def _parse(crs_wkt: str | None):
    """The rasterio CRS of ``crs_wkt``; None when missing or unreadable."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if not crs_wkt:
        return None
    try:
        return CRS.from_wkt(crs_wkt)
    except (CRSError, ValueError, TypeError):
        return None


def _unit_factor(crs) -> float | None:
    """Metres in one linear unit of a parsed projected CRS; None without usable units."""
    from rasterio.errors import CRSError

    try:
        return float(crs.linear_units_factor[1])
    except (CRSError, ValueError, TypeError):
        return None


def metres_per_unit(crs_wkt: str | None) -> float | None:
    """Metres in one unit of a projected CRS (1.0 for metres, 0.3048 for feet); None for a
    geographic CRS (degrees are no fixed length), a missing one or one without usable units."""
    crs = _parse(crs_wkt)
    return None if crs is None or crs.is_geographic else _unit_factor(crs)


@functools.lru_cache(maxsize=64)  # once per scene, not per tile
def pixel_size_m(crs_wkt: str | None, transform: tuple, width: int, height: int) -> float | None:
    """Ground size of one pixel in metres (the square root of its area) of a ``width`` x
    ``height`` grid with this affine ``transform`` (a 6-tuple); degrees are turned into
    metres at the grid's central latitude. None without a CRS or usable units."""
    from affine import Affine

    crs = _parse(crs_wkt)
    if crs is None:
        return None
    affine = Affine(*tuple(transform)[:6])
    side = math.sqrt(abs(affine.a * affine.e - affine.b * affine.d))  # pixel side in CRS units
    if crs.is_geographic:
        _, lat = affine * (width / 2, height / 2)
        return side * 111_320.0 * math.sqrt(max(math.cos(math.radians(lat)), 1e-3))
    factor = _unit_factor(crs)
    return None if factor is None else side * factor
