"""Seam merging: objects of neighbouring tiles that are one object split or doubled by a seam.

Two objects from different tiles are the same when their IoU is at least ``iou_merge`` (the same
object seen twice), or when one of them was cut by its tile's inner edge (``truncated``) and they
overlap by at least ``fragment_overlap`` of the smaller one, or when one was cut and their parts
in the area both tiles see have an IoU of at least ``iou_merge`` (a cover larger than a tile: a
field, a lake, bare soil, whose overlap is a small share of either part however well the two
agree), or, with no overlap left between tiles, when both were cut and they share a stretch of
boundary along a tile edge (the line that cut them: two neighbouring regions of a partition share
their outline everywhere else, and are not one object). Objects of the same tile are never
compared: the engine's own duplicate removal has already judged them.

:class:`SeamIndex` makes these decisions while tiles finish (pass 1), one pair of neighbouring
tiles at a time, on the pieces of the objects inside the box the two tiles share (exact: an
object lies inside its tile, so the intersection of two objects, and any boundary they share,
lies inside that box, and no clip line lies in both tiles). :func:`seam_flags` says which objects
of a tile take part.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import shapely
from affine import Affine
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoalps.inputs.tiles import Tile

IOU_MERGE = 0.5
FRAGMENT_OVERLAP = 0.2


def seam_flags(tile: Tile, boxes: np.ndarray, scene_width: int, scene_height: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of a tile's objects take part in seam merging, from their boxes
    ((row0, col0, row1, col1) in tile pixels): ``truncated`` (cut by an inner tile edge: it may
    continue in the neighbour) and ``candidate`` (reaches into a part of the scene another tile
    also sees, or is cut; with ``--overlap 0`` the interior is the whole tile, so only cut
    objects are candidates)."""
    left, top, right, bottom = tile.inner_edges(scene_width, scene_height)
    truncated = (
        (left & (boxes[:, 1] == 0))
        | (top & (boxes[:, 0] == 0))
        | (right & (boxes[:, 3] >= tile.width))
        | (bottom & (boxes[:, 2] >= tile.height))
    )
    ic0, ir0, ic1, ir1 = tile.interior
    scene_boxes = boxes + (tile.row_off, tile.col_off, tile.row_off, tile.col_off)
    inside_interior = (
        (scene_boxes[:, 1] >= ic0) & (scene_boxes[:, 3] <= ic1)
        & (scene_boxes[:, 0] >= ir0) & (scene_boxes[:, 2] <= ir1)
    )
    truncated = np.asarray(truncated, dtype=bool)
    return truncated, ~inside_interior | truncated


def same_object(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray, cut_a: np.ndarray,
                cut_b: np.ndarray, iou_merge: float = IOU_MERGE, fragment_overlap: float = FRAGMENT_OVERLAP,
                tile_edges=None, seen_by_both=None) -> np.ndarray:
    """Which pairs of intersecting objects are one object. ``a``/``b`` may be the objects or
    their pieces inside the box their tiles share (:meth:`SeamIndex._test`); areas are of the whole
    objects. ``tile_edges``: the two tiles' outlines (:func:`tile_outline`, their union; or one a
    pair); objects that only touch count only the boundary they share along it (None: anywhere).
    ``seen_by_both``: the part of the scene both tiles see (one polygon, or one a pair), for the
    rule on objects larger than it (None: not applied)."""
    # Most neighbours only touch: the overlay is computed only where interiors overlap.
    overlap = shapely.relate_pattern(a, b, "T********")
    inter = np.zeros(len(a))
    if overlap.any():
        inter[overlap] = shapely.area(shapely.intersection(_valid(a[overlap]), _valid(b[overlap])))
    union = area_a + area_b - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0)
    ios = inter / np.maximum(np.minimum(area_a, area_b), 1e-12)
    same = (iou >= iou_merge) | ((cut_a | cut_b) & (ios >= fragment_overlap))
    large = ~same & (cut_a | cut_b) & (inter > 0)
    if seen_by_both is not None and large.any():  # both tiles see the same part of one large object
        region = seen_by_both[large] if isinstance(seen_by_both, np.ndarray) else seen_by_both
        seen_a = shapely.area(shapely.intersection(_valid(a[large]), region))
        seen_b = shapely.area(shapely.intersection(_valid(b[large]), region))
        same[large] = inter[large] >= iou_merge * (seen_a + seen_b - inter[large])
    touching = ~same & cut_a & cut_b & (inter <= 1e-9 * np.maximum(union, 1))
    if touching.any():
        shared = shapely.intersection(shapely.boundary(_valid(a[touching])), shapely.boundary(_valid(b[touching])))
        if tile_edges is not None:
            edges = tile_edges[touching] if isinstance(tile_edges, np.ndarray) else tile_edges
            shared = shapely.intersection(shared, edges)
        shared = shapely.length(shared)
        side = np.sqrt(np.minimum(area_a[touching], area_b[touching]))
        same[np.flatnonzero(touching)] = shared >= 0.25 * side
    return same


def _components(n: int, left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """Connected groups of 0..n-1 under the links ``left[k] - right[k]``, sorted, in first-index order."""
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # Number components by their smallest member so groups come out in first-index order.
    first = np.full(component.max() + 1, n)
    np.minimum.at(first, component, np.arange(n))
    key = first[component]
    order = np.argsort(key, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(key[order])) + 1)


def _clipped(geometries: np.ndarray, ids: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """``geometries[ids]`` clipped to ``box``, clipping each distinct geometry once."""
    unique, back = np.unique(ids, return_inverse=True)
    return shapely.clip_by_rect(geometries[unique], *box)[back]


def _box_pad(tile_bounds: np.ndarray) -> float:
    """1 % of the smallest tile side: how far shared boxes and neighbour tests reach past a tile."""
    return 0.01 * float(np.min(tile_bounds[:, 2:] - tile_bounds[:, :2]))


def _shared_box(tile_bounds: np.ndarray, i: int, j: int, pad: float) -> tuple[float, float, float, float]:
    """Common box of tiles i and j, padded by ``pad`` (:func:`_box_pad`) so that the clip lines lie
    outside the part the two tiles share (an empty-looking box when the tiles only touch)."""
    low = np.maximum(tile_bounds[i, :2], tile_bounds[j, :2]) - pad
    high = np.minimum(tile_bounds[i, 2:], tile_bounds[j, 2:]) + pad
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


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


@dataclass
class _Candidates:
    """One finished tile's seam candidates: their indices in the tile result and what the tests use."""

    objects: np.ndarray
    geometries: np.ndarray
    truncated: np.ndarray
    areas: np.ndarray


class SeamIndex:
    """Seam decisions made as tiles finish, so pass 2 knows which objects merge before it reads
    the tiles back, and the seam tests run while the workers are still busy.

    When a tile finishes, its seam candidates are tested against those of every neighbouring tile
    that has already finished (so each pair of tiles once, in whatever order they finish: the
    decisions do not depend on it). A tile's candidates are dropped once all its neighbours are
    in: memory follows the front of finished tiles, not the scene.
    """

    def __init__(self, plans: Sequence[Sequence[Tile]], transforms: Sequence[Affine]) -> None:
        self._where = {t.key: (s, n) for s, plan in enumerate(plans) for n, t in enumerate(plan)}
        self._bounds = [np.array([t.envelope(tr) for t in plan]).reshape(-1, 4) for plan, tr in zip(plans, transforms)]
        self._edges = [np.array([tile_outline(t, tr) for t in plan], dtype=object) for plan, tr in zip(plans, transforms)]
        self._pads = [_box_pad(b) if len(b) else 0.0 for b in self._bounds]
        self._neighbours = [_touching_tiles(b, pad) for b, pad in zip(self._bounds, self._pads)]
        self._finished = [set() for _ in plans]
        self._held: dict[tuple[int, int], _Candidates] = {}
        self._links: list[list[np.ndarray]] = [[] for _ in plans]  # (tile, object, tile, object) rows

    def add(self, tile: Tile, result) -> None:
        """Test a finished tile's seam candidates (a :class:`~geoalps.labelling.tile_work.TileResult`)
        against its finished neighbours."""
        scene, number = self._where[tile.key]
        if number in self._finished[scene]:
            return
        picked = np.flatnonzero(result.seam_candidate)
        geometries = result.geometries[picked]
        own = _Candidates(picked, geometries, result.truncated[picked], shapely.area(geometries))
        for other in self._neighbours[scene][number]:
            if other in self._finished[scene]:
                self._test(scene, number, own, other, self._held[(scene, other)])
        self._finished[scene].add(number)
        self._held[(scene, number)] = own
        for done in (number, *self._neighbours[scene][number]):
            if (scene, done) in self._held and self._finished[scene].issuperset(self._neighbours[scene][done]):
                del self._held[(scene, done)]

    def _test(self, scene: int, i: int, a: _Candidates, j: int, b: _Candidates) -> None:
        if not len(a.objects) or not len(b.objects):
            return
        ia, ib = shapely.STRtree(b.geometries).query(a.geometries)
        if not len(ia):
            return
        box = _shared_box(self._bounds[scene], i, j, self._pads[scene])
        pa = _clipped(a.geometries, ia, box)
        pb = _clipped(b.geometries, ib, box)
        meet = shapely.intersects(pa, pb)
        ia, ib, pa, pb = ia[meet], ib[meet], pa[meet], pb[meet]
        edges = shapely.union(self._edges[scene][i], self._edges[scene][j])
        same = same_object(pa, pb, a.areas[ia], b.areas[ib], a.truncated[ia], b.truncated[ib], tile_edges=edges,
                           seen_by_both=shapely.box(*_shared_box(self._bounds[scene], i, j, 0.0)))
        if same.any():
            k = int(same.sum())
            self._links[scene].append(np.stack([np.full(k, i), a.objects[ia[same]], np.full(k, j), b.objects[ib[same]]], 1))

    def merged(self, scene: int) -> list[list[tuple[int, int]]]:
        """The scene's objects that merge, as groups of (tile number in the plan, object index in
        the tile result), members and groups in plan order; objects not listed stand alone."""
        if not self._links[scene]:
            return []
        links = np.concatenate(self._links[scene]).astype(np.int64)
        ends = np.concatenate([links[:, :2], links[:, 2:]])
        nodes, inverse = np.unique(ends, axis=0, return_inverse=True)  # sorted: plan order
        inverse = inverse.ravel()
        half = len(links)
        groups = _components(len(nodes), inverse[:half], inverse[half:])
        return [[(int(t), int(o)) for t, o in nodes[g]] for g in groups if len(g) > 1]


def tile_outline(tile: Tile, scene_transform: Affine):
    """The tile's outline in the frame of ``scene_transform`` (where its objects are cut), as a
    band a thousandth of a pixel wide so that boundaries on it are found despite float rounding."""
    pixel = abs(scene_transform.a * scene_transform.e - scene_transform.b * scene_transform.d) ** 0.5
    return shapely.LinearRing(tile.corners(scene_transform)).buffer(1e-3 * pixel, cap_style="flat", join_style="mitre")


def _touching_tiles(bounds: np.ndarray, pad: float) -> list[tuple[int, ...]]:
    """For each tile, the other tiles whose boxes, grown by ``pad``, meet or touch its box."""
    if not len(bounds):
        return []
    boxes = shapely.box(bounds[:, 0] - pad, bounds[:, 1] - pad, bounds[:, 2] + pad, bounds[:, 3] + pad)
    left, right = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    out: list[list[int]] = [[] for _ in range(len(bounds))]
    for i, j in zip(left.tolist(), right.tolist()):
        if i != j:
            out[i].append(j)
    return [tuple(sorted(n)) for n in out]
