"""Masks -> polygons in map coordinates, and the seam merge that makes tile borders invisible.

Two rules keep one polygon per object: a tile keeps only objects whose representative point lies
in its core (``tiling.Tile.core``), and fragments from neighbouring tiles that still overlap across
a seam are merged by :func:`seam_groups`.
"""
from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from rasterio import features as rio_features

from geoalps.masks import TileMasks


def mask_centroids(tile_masks: TileMasks) -> np.ndarray:
    """(N, 2) centroid (col, row) of each mask in tile pixels (pixel centres at +0.5)."""
    out = np.zeros((len(tile_masks), 2), dtype=np.float64)
    if tile_masks.labels is not None and len(tile_masks):
        index = tile_masks.index_image()
        n = len(tile_masks) + 1
        height, width = index.shape
        counts = np.maximum(np.bincount(index.ravel(), minlength=n), 1)[1:]
        cols = np.broadcast_to(np.arange(width, dtype=np.float64), index.shape).ravel()
        rows = np.repeat(np.arange(height, dtype=np.float64), width)
        out[:, 0] = np.bincount(index.ravel(), cols, n)[1:] / counts + 0.5
        out[:, 1] = np.bincount(index.ravel(), rows, n)[1:] / counts + 0.5
        return out
    for i, (crop, (r0, c0, _, _)) in enumerate(zip(tile_masks.crops, tile_masks.boxes)):
        rows, cols = np.nonzero(crop)
        if rows.size:
            out[i] = (c0 + cols.mean() + 0.5, r0 + rows.mean() + 0.5)
    return out


def mask_to_geometry(crop: np.ndarray, transform: Affine, min_part_px: int = 1):
    """One boolean crop -> a Polygon or MultiPolygon (holes kept) under ``transform``.

    Parts smaller than ``min_part_px`` pixels are dropped, except the largest part, so every
    non-empty mask gives a geometry. Cost: proportional to the crop's size.
    """
    parts, sizes = [], []
    for geojson, _ in rio_features.shapes(
        crop.astype(np.uint8), mask=crop, connectivity=4, transform=transform
    ):
        polygon = shapely.geometry.shape(geojson)
        parts.append(polygon)
        sizes.append(abs(polygon.area))
    if not parts:
        return None
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d) or 1.0
    largest = int(np.argmax(sizes))
    kept = [p for i, p in enumerate(parts) if i == largest or sizes[i] / pixel_area >= min_part_px]
    geometry = kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    return geometry


def tile_geometries(tile_masks: TileMasks, tile_transform: Affine, min_part_px: int) -> list:
    """Geometries of every mask of a tile, in the scene's map coordinates."""
    if tile_masks.labels is not None:
        return _disjoint_geometries(tile_masks, tile_transform, min_part_px)
    out = []
    for crop, (r0, c0, _, _) in zip(tile_masks.crops, tile_masks.boxes):
        out.append(mask_to_geometry(crop, tile_transform @ Affine.translation(c0, r0), min_part_px))
    return out


def _disjoint_geometries(tile_masks: TileMasks, tile_transform: Affine, min_part_px: int) -> list:
    """Disjoint masks: one polygonize pass over the tile's index image instead of one per mask
    (the per-call cost dominated tiles with thousands of regions), and polygons built by
    vectorised shapely calls. Same rules as :func:`mask_to_geometry`: 4-connected parts, holes
    kept, small extra parts dropped."""
    n = len(tile_masks)
    if not n:
        return []
    index = tile_masks.index_image()
    coords: list = []
    ring_sizes: list[int] = []
    rings_per_part: list[int] = []
    part_mask: list[int] = []
    # Polygonize in pixel space and map all vertices at once (cheaper than per-vertex in rasterio).
    for geojson, value in rio_features.shapes(index, mask=index > 0, connectivity=4):
        rings = geojson["coordinates"]
        for ring in rings:
            coords.extend(ring)
            ring_sizes.append(len(ring))
        rings_per_part.append(len(rings))
        part_mask.append(int(value) - 1)
    if not part_mask:
        return [None] * n
    ring_of_coord = np.repeat(np.arange(len(ring_sizes)), ring_sizes)
    cols, rows = np.asarray(coords, dtype=np.float64).T
    t = tile_transform
    xy = np.stack([t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f], axis=1)
    rings = shapely.linearrings(xy, indices=ring_of_coord)
    parts = shapely.polygons(rings, indices=np.repeat(np.arange(len(rings_per_part)), rings_per_part))
    part_mask = np.asarray(part_mask)
    # Parts of one mask together, largest first; extra parts under min_part_px pixels dropped.
    pixel_area = abs(tile_transform.a * tile_transform.e - tile_transform.b * tile_transform.d) or 1.0
    sizes = shapely.area(parts) / pixel_area
    order = np.lexsort((-sizes, part_mask))
    parts, part_mask, sizes = parts[order], part_mask[order], sizes[order]
    first = np.r_[True, part_mask[1:] != part_mask[:-1]]
    keep = first | (sizes >= min_part_px)
    parts, part_mask, first = parts[keep], part_mask[keep], first[keep]
    geometries = np.full(n, None, dtype=object)
    single = first & np.r_[first[1:], True]
    geometries[part_mask[single]] = parts[single]
    multi = ~single
    if multi.any():
        owners, position = np.unique(part_mask[multi], return_inverse=True)
        geometries[owners] = shapely.multipolygons(parts[multi], indices=position)
    present = np.flatnonzero(geometries != None)  # noqa: E711 (element-wise)
    invalid = present[~shapely.is_valid(geometries[present])]
    if len(invalid):
        geometries[invalid] = shapely.make_valid(geometries[invalid])
    return list(geometries)


def seam_groups(
    geometries: np.ndarray,
    tile_ids: np.ndarray,
    truncated: np.ndarray,
    tile_bounds: np.ndarray | None = None,
    iou_merge: float = 0.5,
    fragment_overlap: float = 0.2,
) -> list[np.ndarray]:
    """Group objects from different tiles that are one object split or doubled by a seam.

    Two objects from different tiles are the same when their IoU is at least ``iou_merge`` (the
    same object seen twice), or when one of them was cut by its tile's inner edge (``truncated``)
    and they overlap by at least ``fragment_overlap`` of the smaller one, or, with no overlap left
    between tiles, when both were cut and they share a stretch of boundary. Objects of the same
    tile are never merged: the engine's own duplicate removal has already judged them.

    ``tile_bounds`` (one ``(xmin, ymin, xmax, ymax)`` row per tile id, each object inside its
    tile's row) makes the pair tests cheap without changing their outcome: what two objects of
    different tiles share lies where their tiles overlap, so each pair is tested on the pieces of
    the two objects inside that box (see :func:`_pair_pieces`).

    Returns index arrays, one per merged object (singletons included), in first-index order.
    Cost: one STRtree query over the candidates; pairs are tested with vectorised shapely, and
    the intersection itself is computed only for pairs whose interiors overlap.
    """
    n = len(geometries)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n > 1:
        # Boxes first, then the exact test only for pairs from different tiles: most box
        # neighbours are objects of the same tile, which never merge.
        tree = shapely.STRtree(geometries)
        left, right = tree.query(geometries)
        pick = (left < right) & (tile_ids[left] != tile_ids[right])
        left, right = left[pick], right[pick]
        a, b = _pair_pieces(geometries, tile_ids, left, right, tile_bounds)
        meet = shapely.intersects(a, b)
        left, right, a, b = left[meet], right[meet], a[meet], b[meet]
        if len(left):
            # Most neighbours only touch: the overlay is computed only where interiors overlap.
            overlap = shapely.relate_pattern(a, b, "T********")
            inter = np.zeros(len(left))
            if overlap.any():
                inter[overlap] = shapely.area(shapely.intersection(_valid(a[overlap]), _valid(b[overlap])))
            area_a, area_b = shapely.area(geometries[left]), shapely.area(geometries[right])
            union = area_a + area_b - inter
            iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0)
            ios = inter / np.maximum(np.minimum(area_a, area_b), 1e-12)
            cut_a, cut_b = truncated[left], truncated[right]
            same = (iou >= iou_merge) | ((cut_a | cut_b) & (ios >= fragment_overlap))
            touching = ~same & cut_a & cut_b & (inter <= 1e-9 * np.maximum(union, 1))
            if touching.any():
                shared = shapely.length(shapely.intersection(
                    shapely.boundary(_valid(a[touching])), shapely.boundary(_valid(b[touching]))
                ))
                side = np.sqrt(np.minimum(area_a[touching], area_b[touching]))
                same[np.flatnonzero(touching)] = shared >= 0.25 * side
            for i, j in zip(left[same], right[same]):
                root_i, root_j = find(int(i)), find(int(j))
                if root_i != root_j:
                    parent[max(root_i, root_j)] = min(root_i, root_j)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    order = np.argsort(roots, kind="stable")
    boundaries = np.flatnonzero(np.diff(roots[order])) + 1
    return [np.sort(g) for g in np.split(order, boundaries)] if n else []


def _pair_pieces(geometries: np.ndarray, tile_ids: np.ndarray, left: np.ndarray, right: np.ndarray,
                 tile_bounds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The two sides of each pair, clipped to the box shared by their tiles, padded by 1 % of a
    tile so the clip lines lie outside both tiles' common part.

    Exact for the tests that follow: an object lies inside its tile, so the intersection of two
    objects (and any boundary they share) lies inside the shared box, and no point of a clip line
    lies in both tiles, so no clip line is shared by the two pieces. The pieces are small where whole objects can be huge (a background region
    with a hole for every object has thousands of vertices).
    """
    if tile_bounds is None:
        shapely.prepare(geometries)
        return geometries[left], geometries[right]
    tile_bounds = np.asarray(tile_bounds, dtype=np.float64)
    pad = 0.01 * float(np.min(tile_bounds[:, 2:] - tile_bounds[:, :2]))
    n_tiles = len(tile_bounds)
    pair_tiles = tile_ids[left].astype(np.int64) * n_tiles + tile_ids[right]
    order = np.argsort(pair_tiles, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(pair_tiles[order]) != 0])
    a = np.empty(len(left), dtype=object)
    b = np.empty(len(left), dtype=object)
    for sel in np.split(order, starts[1:]):
        i, j = divmod(int(pair_tiles[sel[0]]), n_tiles)
        low = np.maximum(tile_bounds[i, :2], tile_bounds[j, :2]) - pad
        high = np.minimum(tile_bounds[i, 2:], tile_bounds[j, 2:]) + pad
        for ids, out in ((left, a), (right, b)):
            unique, back = np.unique(ids[sel], return_inverse=True)
            out[sel] = shapely.clip_by_rect(geometries[unique], low[0], low[1], high[0], high[1])[back]
    return a, b


def _valid(geometries: np.ndarray) -> np.ndarray:
    """clip_by_rect may leave a ring touching itself at a point; overlay needs valid input."""
    bad = ~shapely.is_valid(geometries)
    if bad.any():
        geometries = geometries.copy()
        geometries[bad] = shapely.make_valid(geometries[bad])
    return geometries


def merge_group(geometries: np.ndarray):
    """Union of the fragments of one object; a single geometry is returned as is."""
    if len(geometries) == 1:
        return geometries[0]
    merged = shapely.union_all(geometries)
    if not merged.is_valid:
        merged = shapely.make_valid(merged)
    return merged
