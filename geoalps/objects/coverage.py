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


def resolve_overlaps(geometries: np.ndarray, areas: np.ndarray | None = None) -> np.ndarray:
    """Each geometry minus the geometries smaller than it (area, then position) whose interiors
    overlap it: every pixel goes to the smallest object on it, the rule of the label raster
    (:func:`geoalps.outputs.raster.burn_objects` burns small objects over large ones). A geometry
    covered by smaller ones becomes None. ``areas`` rank the geometries when given (an object
    already clipped by smaller ones written before it keeps its whole area's rank), else their
    own areas. Cost: an STRtree query and one difference per overlapped geometry."""
    geometries = np.asarray(geometries, dtype=object)
    if len(geometries) < 2:
        return geometries
    areas = shapely.area(geometries) if areas is None else np.asarray(areas, dtype=np.float64)
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
        out[i] = without(geometries[i], shapely.union_all(geometries[right[left == i]]))
    return out


def without(geometry, cutter):
    """``geometry`` minus ``cutter``, valid and polygonal (None when nothing is left)."""
    rest = shapely.difference(geometry, cutter)
    rest = shapely.make_valid(rest) if not shapely.is_valid(rest) else rest
    return _polygonal(rest)


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
    (the square root of its pixel area): "m" needs a projected CRS (metres, feet, ...)."""
    if unit == "px":
        return amount
    if unit == "m":
        from geoalps.errors import OptionError
        from geoalps.inputs.crs import metres_per_unit

        factor = metres_per_unit(crs_wkt)
        if factor is None:
            raise OptionError(f"{where}: --simplify {amount:g}m needs a projected CRS (metres, feet); give pixels "
                              "(e.g. 1.5px) or CRS units (a plain number)")
        amount = amount / factor  # in CRS units
    return amount / (abs(transform.determinant) ** 0.5 or 1.0)


def drop_inner_collinear(geometries: np.ndarray) -> np.ndarray:
    """After :func:`node_pixel_edges`, the vertices one group of polygons does not need: a
    vertex in the middle of a straight run is dropped where exactly two polygons of the group
    meet and it is a corner of neither (both sides drop it, so their edges still match).
    Vertices on the group's outer boundary (one polygon: the other side may be another group's)
    and junctions (three or more polygons, or a corner of any) stay. Cost: linear in vertices."""
    geometries = np.asarray(geometries, dtype=object)
    present = np.flatnonzero(~shapely.is_missing(geometries))
    if len(present) < 2:
        return geometries
    parts, part_owner = shapely.get_parts(geometries[present], return_index=True)
    rings, ring_part = _rings(parts)
    xy, ring_of = shapely.get_coordinates(rings, return_index=True)
    # drop each ring's closing vertex; neighbours are cyclic within a ring
    starts = np.r_[0, np.flatnonzero(np.diff(ring_of)) + 1]
    closing = np.r_[starts[1:] - 1, len(xy) - 1]
    open_mask = np.ones(len(xy), bool)
    open_mask[closing] = False
    xy, ring_of = xy[open_mask], ring_of[open_mask]
    corner = _corners(xy, np.r_[0, np.flatnonzero(np.diff(ring_of)) + 1])
    point = _grid_point_ids(np.rint(xy).astype(np.int64))
    owner = part_owner[ring_part[ring_of]]
    n_owners = int(owner.max()) + 1
    pairs = np.unique(point * n_owners + owner)  # (point, owner) pairs as one code each
    owners_per_point = np.bincount(pairs // n_owners, minlength=point.max() + 1)
    corner_anywhere = np.zeros(point.max() + 1, bool)
    np.logical_or.at(corner_anywhere, point, corner)
    keep = corner_anywhere[point] | (owners_per_point[point] != 2)
    xy, ring_of = xy[keep], ring_of[keep]
    # close the rings again and rebuild polygons (first ring of a part is its shell) and objects
    starts = np.r_[0, np.flatnonzero(np.diff(ring_of)) + 1]
    closed = np.insert(xy, np.r_[starts[1:], len(xy)], xy[starts], axis=0)
    closed_ring = np.insert(ring_of, np.r_[starts[1:], len(ring_of)], ring_of[starts])
    new_rings = shapely.linearrings(closed, indices=closed_ring)
    new_parts = shapely.polygons(new_rings, indices=ring_part)
    out = geometries.copy()
    single = np.bincount(part_owner, minlength=len(present)) == 1
    rebuilt = shapely.multipolygons(new_parts, indices=part_owner)
    for i, kind in enumerate(shapely.get_type_id(geometries[present])):
        out[present[i]] = new_parts[part_owner == i][0] if kind == shapely.GeometryType.POLYGON and single[i] else rebuilt[i]
    return out


def _corners(xy: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Whether each vertex of open rings (``xy`` ring after ring, ``starts`` their first rows)
    turns: its incoming and outgoing edges are not collinear; neighbours are cyclic within a ring.
    Its own function so its (N, 2) temporaries (48 bytes a vertex) are freed before the vertex
    ids are sorted, which is where pass 2's largest group peaks."""
    ends = np.r_[starts[1:], len(xy)]
    incoming = np.empty_like(xy)  # the previous vertex, then the edge into this one
    incoming[1:] = xy[:-1]
    incoming[starts] = xy[ends - 1]
    np.subtract(xy, incoming, out=incoming)
    outgoing = np.empty_like(xy)  # the next vertex, then the edge out of this one
    outgoing[:-1] = xy[1:]
    outgoing[ends - 1] = xy[starts]
    np.subtract(outgoing, xy, out=outgoing)
    return np.abs(incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]) > 0


def _grid_point_ids(keys: np.ndarray) -> np.ndarray:
    """One id per distinct integer (x, y) row of ``keys``, numbered in the order
    ``np.unique(keys, axis=0)`` sorts them, from a 1-D unique of one int64 code a row: a unique
    over rows compares them as opaque records and cost most of pass 2's vertex clean-up."""
    low, high = keys.min(axis=0), keys.max(axis=0)
    if np.prod(high.astype(np.float64) - low + 1) >= 2.0**62:  # codes would overflow: rows as they are
        return np.unique(keys, axis=0, return_inverse=True)[1].ravel()
    codes = (keys[:, 0] - low[0]) * (high[1] - low[1] + 1) + (keys[:, 1] - low[1])
    return np.unique(codes, return_inverse=True)[1].ravel()


def _rings(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ring of every polygon (shell first), with the index of its polygon."""
    shells = shapely.get_exterior_ring(parts)
    n_holes = shapely.get_num_interior_rings(parts)
    rings, owner = [], []
    for i, (shell, k) in enumerate(zip(shells, n_holes)):
        rings.append(shell)
        owner.append(i)
        for j in range(k):
            rings.append(shapely.get_interior_ring(parts[i], j))
            owner.append(i)
    return np.array(rings, dtype=object), np.asarray(owner, dtype=np.int64)
