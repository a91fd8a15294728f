"""Seam merging: clipping each pair of objects to the box their tiles share is a speed-up only;
the seam index (pass 1, clipped pairs, tiles in any order) must group exactly the objects that
the same test on whole objects groups."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import shapely
from affine import Affine

from conftest import random_boxes, scene_with_objects, write_raster
from geoalps.inputs.bands import resolve_bands
from geoalps.objects.features import feature_blocks
from geoalps.options import LabelOptions
from geoalps.inputs.scene import open_scene
from geoalps.labelling.tile_work import TileTask, process_tiles
from geoalps.inputs.tiles import plan_tiles
from geoalps.objects.coverage import to_map
from geoalps.objects.seams import SeamIndex, _components, same_object, tile_outline


def _seam_candidates(path, tile_size: int, overlap: int):
    """Every tile's seam candidates, their tile ids and the tiles' bounds, as pass 2 sees them."""
    scene = open_scene(str(path))
    opts = LabelOptions(engine="classical", tile_size_px=tile_size, overlap_px=overlap, min_area_px=30).validated()
    tiles = plan_tiles(scene.width, scene.height, opts.tile_size_px, opts.overlap_px)
    bands = resolve_bands(opts.bands, scene.count, scene.path)
    blocks = feature_blocks(opts.features, False)
    geoms, tile_ids, truncated, results = [], [], [], []
    for number, tile in enumerate(tiles):
        result = process_tiles(TileTask(scene, (tile,), opts, tuple(bands), tuple(blocks)))[0]
        # tile results are in scene pixels; the seam index works in any frame: test it in map
        # coordinates, where a rotated grid makes tile boxes envelopes
        result = dataclasses.replace(result, geometries=to_map(result.geometries, scene.transform))
        results.append(result)
        keep = result.seam_candidate
        geoms.append(result.geometries[keep])
        tile_ids.append(np.full(int(keep.sum()), number))
        truncated.append(result.truncated[keep])
    bounds = np.array([t.envelope(scene.transform) for t in tiles])
    return np.concatenate(geoms), np.concatenate(tile_ids), np.concatenate(truncated), bounds, (tiles, results, scene)


def _whole_object_groups(geoms, tile_ids, truncated, edges, bounds) -> list[np.ndarray]:
    """The seam rules applied to every intersecting pair of whole objects from different tiles
    (``edges``: each tile's :func:`tile_outline`; a touching pair counts the boundary it shares
    along its two tiles' outlines; ``bounds``: the tiles' boxes, whose intersection both see)."""
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pick = (left < right) & (tile_ids[left] != tile_ids[right])
    left, right = left[pick], right[pick]
    areas = shapely.area(geoms)
    pair_edges = shapely.union(edges[tile_ids[left]], edges[tile_ids[right]])
    seen = shapely.intersection(shapely.box(*bounds[tile_ids[left]].T), shapely.box(*bounds[tile_ids[right]].T))
    same = same_object(geoms[left], geoms[right], areas[left], areas[right], truncated[left], truncated[right],
                       tile_edges=pair_edges, seen_by_both=seen)
    return _components(len(geoms), left[same], right[same])


@pytest.mark.parametrize("transform, overlap", [
    (Affine(0.5, 0, 500000.0, 0, -0.5, 4100000.0), 16),
    (Affine(0.5, 0, 500000.0, 0, -0.5, 4100000.0), 0),  # no overlap: only cut objects that touch merge
    (Affine(0.8, 0.3, 1000.0, 0.2, -0.9, 2000.0), 16),  # rotated grid: tile boxes are envelopes
])
def test_clipped_pair_tests_group_like_whole_objects(tmp_path, transform, overlap):
    data = scene_with_objects(384, 384, random_boxes(40, 384, seed=3, sides=(20, 70), margin=70), seed=4, bands=3)
    path = write_raster(tmp_path / "busy.tif", data, transform=transform)
    geoms, tile_ids, truncated, bounds, (tiles, results, scene) = _seam_candidates(path, 128, overlap)
    for geom, tile in zip(geoms, tile_ids):  # the premise of clipping: objects stay in their tile
        assert shapely.box(*bounds[tile]).buffer(1e-6).contains(geom)

    edges = np.array([tile_outline(t, scene.transform) for t in tiles], dtype=object)
    whole = _whole_object_groups(geoms, tile_ids, truncated, edges, bounds)
    merged = [g for g in whole if len(g) > 1]
    assert len(merged) >= 5, "the scene must exercise real seam merges"
    assert all(len(set(tile_ids[g])) > 1 for g in merged)
    if overlap == 0:  # merges across a zero-width seam can only come from shared boundaries
        a, b = geoms[merged[0][0]], geoms[merged[0][1]]
        assert shapely.area(shapely.intersection(a, b)) == pytest.approx(0, abs=1e-6)

    # The seam index decides tile by tile as tiles finish, in any order, on clipped pairs.
    object_of = np.concatenate([np.flatnonzero(r.seam_candidate) for r in results])
    expected = [[(int(tile_ids[i]), int(object_of[i])) for i in g] for g in merged]
    for seed in (0, 1):
        index = SeamIndex([tiles], [scene.transform])
        for number in np.random.default_rng(seed).permutation(len(tiles)):
            index.add(tiles[number], results[number])
        assert index.merged(0) == expected
        assert not index._held, "candidates are dropped once all neighbours of their tile are in"


def test_regions_that_only_touch_join_along_a_tile_edge_not_along_their_own_outline():
    """Two cut objects of neighbouring tiles that do not overlap are one object when they meet
    where a tile ends (fragments of one object on either side of a zero-overlap seam); two
    neighbouring regions of a partition share their outline too, inside the tiles, and stay two
    (a tile's background and the next tile's fragment of an object in it, as both are cut)."""
    from geoalps.inputs.tiles import Tile

    left_tile = Tile(0, 0, 0, 0, 0, 100, 100, (0, 0, 100, 100), (0, 0, 100, 100))
    right_tile = Tile(0, 0, 1, 100, 0, 100, 100, (100, 0, 200, 100), (100, 0, 200, 100))
    edges = shapely.union(tile_outline(left_tile, Affine.identity()), tile_outline(right_tile, Affine.identity()))
    a = np.array([shapely.box(60, 20, 100, 60)])   # cut by the left tile's right edge at x = 100
    b = np.array([shapely.box(100, 20, 150, 60)])  # its other half, cut by the right tile's left edge
    area_a, area_b, cut = shapely.area(a), shapely.area(b), np.array([True])
    assert same_object(a, b, area_a, area_b, cut, cut, tile_edges=edges).all()
    # a field around an object's fragment: their shared outline lies inside the right tile
    field = np.array([shapely.box(110, 0, 200, 100).difference(shapely.box(120, 20, 170, 60))])
    piece = np.array([shapely.box(120, 20, 170, 60)])
    assert shapely.length(shapely.intersection(field[0].boundary, piece[0].boundary)) > 100
    areas_f, areas_p = shapely.area(field), shapely.area(piece)
    assert not same_object(field, piece, areas_f, areas_p, cut, cut, tile_edges=edges).any()
    assert same_object(field, piece, areas_f, areas_p, cut, cut).all()  # without tile edges: anywhere


def test_a_cover_larger_than_the_shared_part_is_one_object_where_both_tiles_see_it_alike():
    """A field that fills two tiles overlapping by an eighth overlaps itself by a small share of
    either fragment (0.12 of the smaller: under every whole-object rule), yet both tiles see the
    same part of it: one object. A field of the next tile that covers a third of that part is
    another field."""
    seen = shapely.box(88, 0, 100, 100)  # the left tile is x 0..100, the right tile x 88..188
    field_left = np.array([shapely.box(0, 0, 100, 100)])
    field_right = np.array([shapely.box(88, 0, 188, 100)])
    cut = np.array([True])
    args = (field_left, field_right, shapely.area(field_left), shapely.area(field_right), cut, cut)
    assert not same_object(*args).any()  # the whole-object rules alone keep a seam
    assert same_object(*args, seen_by_both=seen).all()
    third = np.array([shapely.box(88, 0, 188, 33)])
    assert not same_object(field_left, third, shapely.area(field_left), shapely.area(third), cut, cut,
                           seen_by_both=seen).any()
