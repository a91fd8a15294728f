"""Masks -> polygons in map coordinates.

Two rules keep one polygon per object: a tile keeps only objects whose representative point lies
in its core (``tiling.Tile.core``), and fragments from neighbouring tiles that still overlap across
a seam are merged (:mod:`geoalps.objects.seams`).
"""
from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from rasterio import features as rio_features

from geoalps.objects.masks import TileMasks


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
    parts = [shapely.geometry.shape(geojson) for geojson, _ in rio_features.shapes(
        crop.astype(np.uint8), mask=crop, connectivity=4, transform=transform
    )]
    if not parts:
        return None
    sizes = _pixels(np.array(parts, dtype=object), transform)
    largest = int(np.argmax(sizes))
    kept = [p for i, p in enumerate(parts) if i == largest or sizes[i] >= min_part_px]
    geometry = kept[0] if len(kept) == 1 else shapely.MultiPolygon(kept)
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    return geometry


def _pixels(parts: np.ndarray, transform: Affine) -> np.ndarray:
    """How many pixels each polygon of pixel squares covers under ``transform``: its area over a
    pixel's, rounded (under a map transform the float area can come out a hair under)."""
    return np.rint(shapely.area(parts) / (abs(transform.determinant) or 1.0))


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
    sizes = _pixels(parts, tile_transform)
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
