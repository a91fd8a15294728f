"""Pass 2 of a run: classify every object from its stored features, merge seam fragments, and
stream the result as frames (the run hands them straight to the output writer).

Tiles are read back from the work store one at a time. Which objects merge across seams is known
before (:class:`geoalps.objects.seams.SeamIndex`, filled in pass 1): every other object is classified and
yielded straight away; fragments of merged objects and a disjoint engine's seam candidates are held
only until every tile that could overlap them has been read.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import shapely

from geoalps.clustering.kmeans import OnlineKMeans
from geoalps.inputs.scene import Scene
from geoalps.objects.tile_result import TileResult
from geoalps.outputs.vector import with_class_names
from geoalps.inputs.tiles import Tile
from geoalps.objects.coverage import (drop_inner_collinear, node_pixel_edges, resolve_overlaps, simplify_coverage, to_map,
                                      without)
from geoalps.objects.seams import merge_group


@dataclass(frozen=True)
class Fragment:
    """One tile's part of an object that continues across a seam, held until the object's last
    fragment is read; ``area_px`` weighs its features, score and class in the merged object.
    ``outline_area_px``: the area of its outline as read, a lower bound of the merged object's
    (the geometry itself loses what smaller objects, written before the object is complete,
    cover of it)."""

    geometry: object  # shapely, scene pixels; None once smaller objects cover all of it
    features: np.ndarray
    score: float
    area_px: float
    outline_area_px: float


@dataclass(frozen=True)
class HeldObject:
    """An object held until its neighbourhood is read: an object merged from its fragments, or a
    disjoint engine's seam candidate (one fragment), whose overlaps are resolved with the others.
    ``rank_area_px`` ranks it in :func:`resolve_overlaps` (smallest on top): its whole area, also
    the part smaller objects written before it already took."""

    geometry: object  # shapely, scene pixels; None when smaller objects took all of it
    features: np.ndarray
    score: float
    n_fragments: int
    rank_area_px: float

    @classmethod
    def candidate(cls, geometry, features: np.ndarray, score: float) -> "HeldObject":
        """A seam candidate: one tile's object, ranked by its own area."""
        return cls(geometry, features, score, 1, float(shapely.area(geometry)))

    @classmethod
    def merged(cls, parts: Sequence[Fragment], taken_px: float = 0.0) -> "HeldObject":
        """One object from its fragments: the union, and features and score weighted by area;
        ``taken_px``: the area of it that smaller objects written before it took (see
        :func:`_cut_fragments`), added back for its rank."""
        area_px = np.array([p.area_px for p in parts])
        weights = area_px / max(area_px.sum(), 1)
        outlines = [p.geometry for p in parts if p.geometry is not None]
        geometry = merge_group(np.array(outlines, dtype=object)) if outlines else None
        rank = (float(shapely.area(geometry)) if geometry is not None else 0.0) + taken_px
        return cls(geometry, weights @ np.stack([p.features for p in parts]),
                   float(weights @ np.array([p.score for p in parts])), len(parts), rank)


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
    written as soon as their own pixels are decided (:func:`_split_ready`), their overlaps
    resolved (smallest object on top, the label raster's rule), every edge noded, and each yielded group
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
    taken_px: dict[int, float] = {}  # per merged object: area its fragments lost to objects written before it
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
        rows = sorted((r for r in rows if r.row.geometry is not None), key=lambda r: r.order)
        geometries = np.array([r.row.geometry for r in rows], dtype=object)
        if disjoint:
            geometries = resolve_overlaps(geometries, [r.row.rank_area_px for r in rows])
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
                geometry = result.geometries[index]
                fragments[(tile_number, index)] = Fragment(geometry, feats[index], float(result.scores[index]),
                                                           float(result.area_px[index]), float(shapely.area(geometry)))
            if result.disjoint:
                keep = alone & result.seam_candidate
                for i in np.flatnonzero(keep):
                    row = HeldObject.candidate(result.geometries[i], feats[i], float(result.scores[i]))
                    pending.append(_Pending((0, candidates_seen), row, ready_after(row.geometry)))
                    candidates_seen += 1
                alone &= ~keep
            if alone.any():
                yield _frame(scene, finish(result.geometries[alone]), feats[alone], result.scores[alone],
                             np.ones(int(alone.sum())), clusterer)
        for group_number in groups_ending.get(tile_number, []):  # merged objects whose last fragment is read
            row = HeldObject.merged([fragments.pop(member) for member in merged[group_number]],
                                    taken_px.pop(group_number, 0.0))
            pending.append(_Pending((1, group_number), row, max(tile_number, ready_after(row.geometry))))
        last = tile_number == len(tiles) - 1
        # checked when enough have become ready since the last check: ready objects still blocked
        # by a neighbour would otherwise make every later tile pay for an STRtree of them
        if last or ready_count() - ready_blocked >= FLUSH_READY_OBJECTS:
            incomplete = [key for key, f in fragments.items() if f.geometry is not None]  # merged objects still to come
            ready, pending, on_top, on_held = _split_ready(
                pending, [(fragments[k].geometry, fragments[k].outline_area_px) for k in incomplete], tile_number, disjoint)
            pending = _cut_held(pending, ready, on_held)
            ready_blocked = ready_count()
            frame = write(ready) if ready else None
            _cut_fragments(fragments, taken_px, group_of,
                           [(ready[i].row.geometry, incomplete[j]) for i, j in on_top if ready[i].row.geometry is not None])
            if frame is not None:
                yield frame
    if pending:  # cannot happen: every tile has been read
        raise RuntimeError(f"{scene.name}: {len(pending)} held objects were never written")


def _split_ready(pending: list[_Pending], incomplete: list[tuple[object, float]], tile_number: int,
                 disjoint: bool) -> tuple[list[_Pending], list[_Pending], list[tuple[int, int]], list[tuple[int, int]]]:
    """(objects to write now, objects still held, (written, fragment) pairs to cut, (written,
    held) pairs where the first is on top of the second). Without overlaps to resolve (not a
    disjoint engine) every held object is ready.

    Each pixel goes to the smallest object on it (:func:`resolve_overlaps`), so an object's
    pixels are its outline minus the outlines of the smaller objects that overlap it: they are
    decided once every tile that could hold an object overlapping it has been read, and no
    fragment of a merged object still to complete overlaps it unless that object is surely
    larger (its outline's area, ``incomplete``'s second item, is a lower bound of the whole's).
    Such an object is ready whatever its held neighbours wait for; a held object it is on top of
    is cut by it (the fourth list) and one on top of it cuts it first, so holding nothing chains
    along the scene's overlap bands. A cover that spans the scene (a desert, a sea) is one object
    complete only at the scene's end: an object on one of its fragments and smaller than it is
    written and cut out of the fragment (the third list). Holding every object joined by overlaps
    to one still waiting held, on textured soil, every seam candidate read so far (a09_drawn_020
    mirrored to 10240 x 10240 px: 3,812 held at tile 135 of 144, 5,153 written at the end, 2.3 GB)."""
    if not disjoint:
        return pending, [], [], []
    geometries = np.array([p.row.geometry for p in pending] + [g for g, _ in incomplete], dtype=object)
    n, n_pending = len(geometries), len(pending)
    if not n:
        return [], [], [], []
    rank = np.array([p.row.rank_area_px for p in pending] + [a for _, a in incomplete], dtype=np.float64)
    left, right = shapely.STRtree(geometries).query(geometries, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    inner = shapely.relate_pattern(geometries[left], geometries[right], "T********")
    left, right = left[inner], right[inner]
    ready = np.array([p.ready_after <= tile_number for p in pending], dtype=bool)
    on_fragment = (left < n_pending) & (right >= n_pending)  # a held object and a fragment (pending come first)
    fragment_on_top = on_fragment & (rank[left] >= rank[right])  # the fragment's object may be smaller
    ready[left[fragment_on_top]] = False
    place = np.cumsum(ready) - 1  # place of each ready object in the first list
    held_place = np.cumsum(~ready) - 1
    cuts = [(int(place[i]), int(j) - n_pending) for i, j in zip(left[on_fragment & ~fragment_on_top],
                                                               right[on_fragment & ~fragment_on_top]) if ready[i]]
    # pairs of held objects with one written now: the one on top (smaller; ties: the first held)
    # cuts the other, as resolve_overlaps would have in one group
    both = right < n_pending
    a, b = left[both], right[both]
    mixed = ready[a] != ready[b]
    a, b = a[mixed], b[mixed]
    written, kept = np.where(ready[a], a, b), np.where(ready[a], b, a)
    order = [p.order for p in pending]
    written_on_top = [bool(rank[w] < rank[k] or (rank[w] == rank[k] and order[w] < order[k]))
                      for w, k in zip(written.tolist(), kept.tolist())]
    ready_list = [p for p, r in zip(pending, ready) if r]
    held_list = [p for p, r in zip(pending, ready) if not r]
    # a held object on top of one written now takes its pixels first
    ready_list = _cut_rows(ready_list, [(int(place[w]), pending[k].row.geometry)
                                        for w, k, top in zip(written.tolist(), kept.tolist(), written_on_top) if not top])
    on_held = [(int(place[w]), int(held_place[k])) for w, k, top in zip(written.tolist(), kept.tolist(), written_on_top) if top]
    return ready_list, held_list, cuts, on_held


def _cut_held(held: list[_Pending], written: list[_Pending], on_held: list[tuple[int, int]]) -> list[_Pending]:
    """``held`` with each object cut by the written objects on top of it (``on_held``: (written,
    held) places), keeping its rank: what resolving them in one group would have taken from it."""
    return _cut_rows(held, [(k, written[w].row.geometry) for w, k in on_held])


def _cut_rows(rows: list[_Pending], cuts: list[tuple[int, object]]) -> list[_Pending]:
    """``rows`` with the row at each place cut by the geometries paired with it (``cuts``:
    (place, geometry); None geometries cut nothing), each keeping its rank."""
    cutters: dict[int, list] = {}
    for place, geometry in cuts:
        if geometry is not None:
            cutters.setdefault(place, []).append(geometry)
    rows = list(rows)
    for place, geometries in cutters.items():
        row = rows[place].row
        if row.geometry is not None:
            rows[place] = replace(rows[place], row=replace(row, geometry=without(row.geometry, shapely.union_all(
                np.array(geometries, dtype=object)))))
    return rows


def _cut_fragments(fragments: dict[tuple[int, int], Fragment], taken_px: dict[int, float],
                   group_of: dict[int, dict[int, int]], cuts: list[tuple[object, tuple[int, int]]]) -> None:
    """Cut written objects (``cuts``: (geometry as held, fragment key)) out of the fragments of
    the merged objects they lie on, and add the area their merged object loses to ``taken_px``.
    Every fragment a written object overlaps has been read (it waited for every tile its box
    meets), and no fragment read later reaches it, so the merged object comes out as the union of
    its fragments minus every smaller object on it: what holding the whole scene gave. Cost: per
    merged object, one union of the fragments cut and one difference each."""
    by_group: dict[int, tuple[set, list]] = {}
    for geometry, key in cuts:
        keys, cutters = by_group.setdefault(group_of[key[0]][key[1]], (set(), []))
        keys.add(key)
        cutters.append(geometry)
    for group_number, (keys, cutters) in by_group.items():
        cutter = shapely.union_all(np.array(cutters, dtype=object))
        outline = shapely.union_all(np.array([fragments[k].geometry for k in keys], dtype=object))
        taken_px[group_number] = taken_px.get(group_number, 0.0) + float(shapely.area(shapely.intersection(outline, cutter)))
        for key in keys:
            fragments[key] = replace(fragments[key], geometry=without(fragments[key].geometry, cutter))
