"""Pass 2 of a run: classify every object from its stored features, merge seam fragments, and
stream the result as frames (the run hands them straight to the output writer).

Tiles are read back from the work store one at a time. Which objects merge across seams is known
before (:class:`geoalps.objects.seams.SeamIndex`, filled in pass 1): every other object is classified and
yielded straight away, and only the fragments of merged objects are held until the scene is done.
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
    candidates (objects reaching a part of the scene another tile also sees) are held with the
    merged fragments until the scene is done, their overlaps resolved (smallest object on top,
    the label raster's rule), every edge noded, and each yielded group (one tile's free objects;
    the held ones) coverage-simplified by ``simplify_px`` with its outer boundary fixed. Memory:
    the held objects of one scene (those near tile seams).
    """
    group_of: dict[int, dict[int, int]] = {}
    for group_number, group in enumerate(merged):
        for tile_number, index in group:
            group_of.setdefault(tile_number, {})[index] = group_number
    fragments: dict[tuple[int, int], Fragment] = {}  # only fragments of merged objects are held
    held: list[HeldObject] = []  # a disjoint engine's seam candidates
    disjoint = False

    def finish(geometries) -> np.ndarray:
        geometries = np.asarray(geometries, dtype=object)
        if disjoint:
            geometries = simplify_coverage(drop_inner_collinear(node_pixel_edges(geometries)), simplify_px)
        return to_map(geometries, scene.transform)

    for tile_number, tile in enumerate(tiles):
        result = load(tile)
        if on_tile is not None:
            on_tile()
        if not len(result):
            continue
        disjoint = disjoint or result.disjoint
        feats = result.feature_matrix(blocks)
        alone = np.ones(len(result), dtype=bool)
        for index in group_of.get(tile_number, {}):
            alone[index] = False
            fragments[(tile_number, index)] = Fragment(result.geometries[index], feats[index],
                                                       float(result.scores[index]), float(result.area_px[index]))
        if result.disjoint:
            keep = alone & result.seam_candidate
            held.extend(HeldObject(result.geometries[i], feats[i], float(result.scores[i]), 1) for i in np.flatnonzero(keep))
            alone &= ~keep
        if alone.any():
            yield _frame(scene, finish(result.geometries[alone]), feats[alone], result.scores[alone],
                         np.ones(int(alone.sum())), clusterer)
    rows = held + [HeldObject.merged([fragments.pop(member) for member in group]) for group in merged]
    if rows:  # the held objects: one group
        geometries = np.array([r.geometry for r in rows], dtype=object)
        if disjoint:
            geometries = resolve_overlaps(geometries)
        kept = np.flatnonzero(~shapely.is_missing(geometries))
        if len(kept):
            yield _frame(scene, finish(geometries[kept]), np.asarray([rows[i].features for i in kept]),
                         [rows[i].score for i in kept], [rows[i].n_fragments for i in kept], clusterer)
