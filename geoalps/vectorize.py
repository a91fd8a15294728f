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
    out = []
    for crop, (r0, c0, _, _) in zip(tile_masks.crops, tile_masks.boxes):
        out.append(mask_to_geometry(crop, tile_transform @ Affine.translation(c0, r0), min_part_px))
    return out


def seam_groups(
    geometries: np.ndarray,
    tile_ids: np.ndarray,
    truncated: np.ndarray,
    iou_merge: float = 0.5,
    fragment_overlap: float = 0.2,
) -> list[np.ndarray]:
    """Group objects from different tiles that are one object split or doubled by a seam.

    Two objects from different tiles are the same when their IoU is at least ``iou_merge`` (the
    same object seen twice), or when one of them was cut by its tile's inner edge (``truncated``)
    and they overlap by at least ``fragment_overlap`` of the smaller one, or, with no overlap left
    between tiles, when both were cut and they share a stretch of boundary. Objects of the same
    tile are never merged: the engine's own duplicate removal has already judged them.

    Returns index arrays, one per merged object (singletons included), in first-index order.
    Cost: one STRtree query over the candidates; pairs are tested with vectorised shapely.
    """
    n = len(geometries)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n > 1:
        tree = shapely.STRtree(geometries)
        left, right = tree.query(geometries, predicate="intersects")
        pick = (left < right) & (tile_ids[left] != tile_ids[right])
        left, right = left[pick], right[pick]
        if len(left):
            a, b = geometries[left], geometries[right]
            inter = shapely.area(shapely.intersection(a, b))
            area_a, area_b = shapely.area(a), shapely.area(b)
            union = area_a + area_b - inter
            iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0)
            ios = inter / np.maximum(np.minimum(area_a, area_b), 1e-12)
            cut_a, cut_b = truncated[left], truncated[right]
            same = (iou >= iou_merge) | ((cut_a | cut_b) & (ios >= fragment_overlap))
            touching = ~same & cut_a & cut_b & (inter <= 1e-9 * np.maximum(union, 1))
            if touching.any():
                shared = shapely.length(
                    shapely.intersection(shapely.boundary(a[touching]), shapely.boundary(b[touching]))
                )
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


def merge_group(geometries: np.ndarray):
    """Union of the fragments of one object; a single geometry is returned as is."""
    if len(geometries) == 1:
        return geometries[0]
    merged = shapely.union_all(geometries)
    if not merged.is_valid:
        merged = shapely.make_valid(merged)
    return merged
