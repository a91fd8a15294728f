"""Pass 2 of a run: classify every object from its stored features, merge seam fragments, and
stream the result as frames (the run hands them straight to the output writer).

Tiles are read back from the work store one at a time. Which objects merge across seams is known
before (:class:`geoalps.objects.seams.SeamIndex`, filled in pass 1): every other object is classified and
yielded straight away; fragments of merged objects and a disjoint engine's seam candidates are held
only until every tile that could overlap them has been read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import shapely

from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.inputs.scene import Scene
from geoalps.objects.tile_result import TileResult
from geoalps.outputs.vector import with_class_names
from geoalps.inputs.tiles import Tile
from geoalps.objects.coverage import drop_inner_collinear, node_pixel_edges, resolve_overlaps, simplify_coverage, to_map
from geoalps.objects.seams import merge_group


@dataclass(frozen=True)
class Fragment:
    """One tile's part of an object that continues across a seam, held until its scene is done;
    ``area_px`` weighs its features, score and class in the merged object."""

    geometry: object  # shapely, scene pixels
    features: np.ndarray
    score: float
    area_px: float


@dataclass(frozen=True)
class HeldObject:
    """An object yielded with its scene's last group: an object merged from its fragments, or a
    disjoint engine's seam candidate (one fragment), whose overlaps are resolved with the others."""

    geometry: object  # shapely, scene pixels
    features: np.ndarray
    score: float
    n_fragments: int

    @classmethod
    def merged(cls, parts: Sequence[Fragment]) -> "HeldObject":
        """One object from its fragments: the union, and features and score weighted by area."""
        area_px = np.array([p.area_px for p in parts])
        weights = area_px / max(area_px.sum(), 1)
        return cls(merge_group(np.array([p.geometry for p in parts], dtype=object)),
                   weights @ np.stack([p.features for p in parts]), float(weights @ np.array([p.score for p in parts])),
                   len(parts))


def _frame(scene: Scene, geometries, features, scores, fragments, clusterer: OnlineKMeans | None):
    """Objects as rows; ``geometries`` are already in map coordinates."""
    import geopandas as gpd
    import shapely

    classes = clusterer.predict(features) if clusterer is not None else np.zeros(len(geometries), np.int32)
    distance = clusterer.distances(features) if clusterer is not None else np.zeros(len(geometries))
    pixel_area = abs(scene.transform.determinant) or 1.0
    frame = gpd.GeoDataFrame(
        {
            "pseudo_class": classes.astype(np.int32),
            "score": np.round(np.asarray(scores, dtype=np.float64), 6),
            "area_px": np.rint(shapely.area(geometries) / pixel_area).astype(np.int64),
            "n_fragments": np.asarray(fragments, dtype=np.int32),
            "class_distance": np.round(np.asarray(distance, dtype=np.float64), 6),
            "scene": np.full(len(geometries), scene.name, dtype=object),
        },
        geometry=gpd.GeoSeries(list(geometries), crs=scene.crs_wkt),
        crs=scene.crs_wkt,
    )
    names = clusterer.class_names if clusterer is not None else None
    if names is not None:  # a named model: class_id and class_name as `geoalps classes name` writes them
        frame = with_class_names(frame, names.class_ids(), names.merged_names)
    return frame


#: Held objects are checked for writing once this many more of them have become ready (every tile
#: that could hold an object overlapping them has been read) since the last check: each check builds
#: an STRtree of the held objects, so checking after every tile would cost more than it saves;
#: memory stays a few tile rows' worth.
FLUSH_READY_OBJECTS = 2000


@dataclass
class _Pending:
    """A held object waiting for its neighbours: ``order`` is its place in the scene's held list
    (seam candidates in reading order, then merged objects by group), which decides ties in
    :func:`resolve_overlaps`; ``ready_after``: the last tile number whose window meets its box."""

    order: tuple[int, int]
    row: HeldObject
    ready_after: int


def assemble_scene(
    scene: Scene,
    tiles: Sequence[Tile],
    load: Callable[[Tile], TileResult],
    blocks: Sequence[str],
    clusterer: OnlineKMeans | None,
    merged: Sequence[Sequence[tuple[int, int]]] = (),
    on_tile: Callable[[], None] | None = None,
    simplify_px: float = 0.0,
) -> Iterator:
    """Classify and merge one scene's objects; yields them as GeoDataFrames in the scene's CRS
    (the columns of :data:`geoalps.outputs.vector.OBJECT_COLUMNS`), no empty ones.

    ``merged`` lists the objects that are one object across a seam, as groups of (tile number,
    object index) (:meth:`geoalps.objects.seams.SeamIndex.merged`); every other object is yielded as its
    tile is read. A merged object's features, score and class come from its fragments weighted
    by pixel area. Tile results hold scene-pixel geometries; they go to map coordinates here.

    Objects of a disjoint engine leave as a coverage (:mod:`geoalps.objects.coverage`): the seam
    candidates (objects reaching a part of the scene another tile also sees) and merged objects
    are held until every tile that could hold an object overlapping them has been read, then
    written in sets closed under overlap (:func:`_split_ready`), their overlaps resolved
    (smallest object on top, the label raster's rule), every edge noded, and each yielded group
    coverage-simplified by ``simplify_px`` with its outer boundary fixed. Memory: the held objects
    of a few rows of tiles, whatever the scene's size (holding them all to the scene's end grew
    with its area: 9 GB at 20480 x 20480 px).
    """
    group_of: dict[int, dict[int, int]] = {}
    group_last_tile = np.full(len(merged), -1)
    for group_number, group in enumerate(merged):
        for tile_number, index in group:
            group_of.setdefault(tile_number, {})[index] = group_number
            group_last_tile[group_number] = max(group_last_tile[group_number], tile_number)
    groups_ending: dict[int, list[int]] = {}
    for group_number, last in enumerate(group_last_tile.tolist()):
        groups_ending.setdefault(last, []).append(group_number)
    windows = np.array([(t.col_off, t.row_off, t.col_off + t.width, t.row_off + t.height) for t in tiles],
                       dtype=np.float64).reshape(-1, 4)
    fragments: dict[tuple[int, int], Fragment] = {}  # only fragments of merged objects are held
    pending: list[_Pending] = []  # held objects not yet written
    disjoint = False
    candidates_seen = 0
    ready_blocked = 0  # ready objects the last check left held (an overlapping neighbour was not ready)

    def finish(geometries) -> np.ndarray:
        geometries = np.asarray(geometries, dtype=object)
        if disjoint:
            geometries = simplify_coverage(drop_inner_collinear(node_pixel_edges(geometries)), simplify_px)
        return to_map(geometries, scene.transform)

    def ready_after(geometry) -> int:
        x0, y0, x1, y1 = shapely.bounds(geometry)
        meets = (windows[:, 0] <= x1 + 1) & (windows[:, 2] >= x0 - 1) & (windows[:, 1] <= y1 + 1) & (windows[:, 3] >= y0 - 1)
        return int(np.flatnonzero(meets).max()) if meets.any() else -1

    def ready_count() -> int:
        return sum(p.ready_after <= tile_number for p in pending)

    def write(rows: list[_Pending]):
        rows = sorted(rows, key=lambda r: r.order)
        geometries = np.array([r.row.geometry for r in rows], dtype=object)
        if disjoint:
            geometries = resolve_overlaps(geometries)
        kept = np.flatnonzero(~shapely.is_missing(geometries))
        if len(kept):
            return _frame(scene, finish(geometries[kept]), np.asarray([rows[i].row.features for i in kept]),
                          [rows[i].row.score for i in kept], [rows[i].row.n_fragments for i in kept], clusterer)
        return None

    for tile_number, tile in enumerate(tiles):
        result = load(tile)
        if on_tile is not None:
            on_tile()
        if len(result):
            disjoint = disjoint or result.disjoint
            feats = result.feature_matrix(blocks)
            alone = np.ones(len(result), dtype=bool)
            for index in group_of.get(tile_number, {}):
                alone[index] = False
                fragments[(tile_number, index)] = Fragment(result.geometries[index], feats[index],
                                                           float(result.scores[index]), float(result.area_px[index]))
            if result.disjoint:
                keep = alone & result.seam_candidate
                for i in np.flatnonzero(keep):
                    row = HeldObject(result.geometries[i], feats[i], float(result.scores[i]), 1)
                    pending.append(_Pending((0, candidates_seen), row, ready_after(row.geometry)))
                    candidates_seen += 1
                alone &= ~keep
            if alone.any():
                yield _frame(scene, finish(result.geometries[alone]), feats[alone], result.scores[alone],
                             np.ones(int(alone.sum())), clusterer)
        for group_number in groups_ending.get(tile_number, []):  # merged objects whose last fragment is read
            row = HeldObject.merged([fragments.pop(member) for member in merged[group_number]])
            pending.append(_Pending((1, group_number), row, max(tile_number, ready_after(row.geometry))))
        last = tile_number == len(tiles) - 1
        # checked when enough have become ready since the last check: ready objects still blocked
        # by a neighbour would otherwise make every later tile pay for an STRtree of them
        if last or ready_count() - ready_blocked >= FLUSH_READY_OBJECTS:
            incomplete = [f.geometry for f in fragments.values()]  # parts of merged objects still to come
            ready, pending = _split_ready(pending, incomplete, tile_number, disjoint)
            ready_blocked = ready_count()
            frame = write(ready) if ready else None
            if frame is not None:
                yield frame
    if pending:  # cannot happen: every tile has been read
        raise RuntimeError(f"{scene.name}: {len(pending)} held objects were never written")


def _split_ready(pending: list[_Pending], incomplete: list, tile_number: int,
                 disjoint: bool) -> tuple[list[_Pending], list[_Pending]]:
    """(objects to write now, objects still held). Without overlaps to resolve (not a disjoint
    engine) every held object is ready. Else objects whose interiors overlap are joined (an
    STRtree of the held objects and of ``incomplete``, the read fragments of merged objects not
    yet complete), and a joined set is ready when all its objects are: each overlap is then
    resolved among the same objects, in the same order, as if the whole scene were held."""
    if not disjoint:
        return pending, []
    geometries = np.array([p.row.geometry for p in pending] + list(incomplete), dtype=object)
    n = len(geometries)
    if not n:
        return [], []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    left, right = shapely.STRtree(geometries).query(geometries, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    inner = shapely.relate_pattern(geometries[left], geometries[right], "T********")
    left, right = left[inner], right[inner]
    _, component = connected_components(coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n)), directed=False)
    waiting = np.ones(n, dtype=bool)
    waiting[: len(pending)] = [p.ready_after > tile_number for p in pending]
    blocked = np.zeros(int(component.max()) + 1, dtype=bool)
    blocked[component[waiting]] = True
    return ([p for p, c in zip(pending, component) if not blocked[c]],
            [p for p, c in zip(pending, component) if blocked[c]])
