"""Polygons of a disjoint engine as a clean coverage: neighbours share their edges vertex for
vertex (no T-junctions, no float mismatch), across tile seams too, with no overlaps.

Objects stay in integer scene-pixel coordinates (col, row) from polygonisation to the end: tiles
add their integer offsets, seam fragments are unioned and overlaps resolved there, where every
overlay of pixel outlines is exact. Then :func:`node_pixel_edges` puts a vertex at every pixel
corner along every edge, so two polygons that share an edge share all of its vertices whichever
tile, seam merge or overlay made them (GDAL's polygonizer keeps only the corners of each outline,
so a straight edge has no vertex where its neighbour's edge ends). One affine transform with the
scene's transform (:func:`to_map`) is the last step, so the same pixel corner always becomes the
same float pair. Cost: a vertex per pixel of outline (about the perimeter in pixels); coverage
simplification (:func:`simplify_coverage`, ``--simplify``) takes most of them out again.
"""
from __future__ import annotations

import numpy as np
import shapely
from affine import Affine


def to_map(geometries: np.ndarray, transform: Affine) -> np.ndarray:
    """Scene-pixel geometries in map coordinates: one affine for all vertices, vectorised."""
    geometries = np.asarray(geometries, dtype=object)
    if transform == Affine.identity():
        return geometries
    t = transform
    matrix = np.array([[t.a, t.d], [t.b, t.e]])
    offset = np.array([t.c, t.f])
    return shapely.transform(geometries, lambda xy: xy @ matrix + offset)


def node_pixel_edges(geometries: np.ndarray) -> np.ndarray:
    """A vertex at every pixel corner along every edge (edges are axis-parallel with integer
    ends, so the inserted vertices are exact integers): what makes any two neighbours' shared
    edges identical, without knowing the neighbours."""
    geometries = np.asarray(geometries, dtype=object)
    present = ~shapely.is_missing(geometries)
    out = geometries.copy()
    out[present] = shapely.transform(shapely.segmentize(geometries[present], 1.0), np.rint)
    return out


def resolve_overlaps(geometries: np.ndarray) -> np.ndarray:
    """Each geometry minus the geometries smaller than it (area, then position) whose interiors
    overlap it: every pixel goes to the smallest object on it, the rule of the label raster
    (:func:`geoalps.outputs.raster.burn_objects` burns small objects over large ones). A geometry
    covered by smaller ones becomes None. Cost: an STRtree query and one difference per
    overlapped geometry."""
    geometries = np.asarray(geometries, dtype=object)
    if len(geometries) < 2:
        return geometries
    areas = shapely.area(geometries)
    left, right = shapely.STRtree(geometries).query(geometries, predicate="intersects")
    pairs = left != right
    left, right = left[pairs], right[pairs]
    # the larger of each pair (ties: the later one) loses the overlap
    loser = (areas[left] > areas[right]) | ((areas[left] == areas[right]) & (left > right))
    left, right = left[loser], right[loser]
    if not len(left):
        return geometries
    overlap = shapely.relate_pattern(geometries[left], geometries[right], "T********")
    left, right = left[overlap], right[overlap]
    out = geometries.copy()
    for i in np.unique(left):
        rest = shapely.difference(geometries[i], shapely.union_all(geometries[right[left == i]]))
        rest = shapely.make_valid(rest) if not shapely.is_valid(rest) else rest
        out[i] = _polygonal(rest)
    return out


def _polygonal(geometry):
    """The polygonal part of an overlay result (None when nothing is left)."""
    if geometry is None or geometry.is_empty:
        return None
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
    if not parts:
        return None
    return shapely.union_all(parts)


def simplify_coverage(geometries: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Coverage simplification (``shapely.coverage_simplify``) of one group of neighbouring
    polygons, keeping the group's outer boundary fixed: the edges this group shares with others
    written in other batches stay as they are on both sides, so the batches fit together with no
    gap and no overlap. Vertices are only removed, never moved, so they stay integers."""
    geometries = np.asarray(geometries, dtype=object)
    present = np.flatnonzero(~shapely.is_missing(geometries))
    if tolerance_px <= 0 or len(present) == 0:
        return geometries
    out = geometries.copy()
    out[present] = shapely.coverage_simplify(geometries[present], tolerance_px, simplify_boundary=False)
    return out


def tolerance_px(amount: float, unit: str, transform: Affine, crs_wkt: str | None, where: str) -> float:
    """A ``--simplify`` tolerance (:func:`geoalps.options.parse_simplify`) in pixels of a scene
    (the square root of its pixel area): "m" needs a CRS in metres."""
    if unit == "px":
        return amount
    if unit == "m":
        from pyproj import CRS

        from geoalps.errors import OptionError

        units = {a.unit_name for a in CRS.from_wkt(crs_wkt).axis_info} if crs_wkt else set()
        if not units or not units <= {"metre", "meter", "m"}:
            raise OptionError(f"{where}: --simplify {amount:g}m needs a CRS in metres; give pixels (e.g. 1.5px) "
                              "or CRS units (a plain number)")
    return amount / (abs(transform.determinant) ** 0.5 or 1.0)
