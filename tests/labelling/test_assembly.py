"""Pass 2 writes held seam objects in groups as their neighbourhood is read, not all at the scene's end.

Holding every seam candidate of a disjoint engine until the scene was done made the driver's memory
grow with the scene's area (9 GB at 20480 x 20480 px, benchmarks/scaling). Written as soon as
every tile that could overlap them has been read (and cut by, or cutting, the neighbours still
held), the output must be the same objects, pixel for pixel, as when the whole scene is held.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
import shapely

import geoalps.labelling.assembly as assembly
from geoalps import label
from tests.conftest import REPO

_SPLIT_READY = assembly._split_ready
SAMPLE = REPO / "sample_data" / "scene_rgb_u8.tif"


def _run(tmp_path, name, monkeypatch, flush_ready_objects, scene=SAMPLE):
    """Label ``scene`` in 256 px tiles; also each check of the held objects as (tile number,
    objects written, objects left held, (written, fragment) pairs cut)."""
    monkeypatch.setattr(assembly, "FLUSH_READY_OBJECTS", flush_ready_objects)
    written = []

    def counting(pending, incomplete, tile_number, disjoint):
        ready, held, cuts, on_held = _SPLIT_READY(pending, incomplete, tile_number, disjoint)
        written.append((tile_number, len(ready), len(held), len(cuts)))
        return ready, held, cuts, on_held

    monkeypatch.setattr(assembly, "_split_ready", counting)
    out = tmp_path / name
    out.mkdir()
    label([scene], out / "o.gpkg", raster_out=out / "l.tif", quiet=True, tile_size_px=256, overlap_px=32)
    with rasterio.open(out / "l.tif") as raster:
        labels = raster.read(1)
    return gpd.read_file(out / "o.gpkg", layer="masks"), labels, written


def _objects(frame):
    centres = shapely.centroid(frame.geometry.values)
    return sorted(zip(frame["pseudo_class"], frame["area_px"], frame["n_fragments"], np.round(frame["score"], 6),
                      np.round(shapely.get_x(centres), 6), np.round(shapely.get_y(centres), 6)))


def test_held_objects_written_in_groups_are_the_objects_of_one_group(tmp_path, monkeypatch):
    whole, whole_labels, whole_written = _run(tmp_path, "whole", monkeypatch, 10**9)
    groups, group_labels, group_written = _run(tmp_path, "groups", monkeypatch, 1)
    assert sum(ready > 0 for _, ready, _, _ in whole_written) == 1  # the scene's end: everything in one group, as before
    assert sum(ready > 0 for _, ready, _, _ in group_written) >= 5  # written as the tiles were read
    assert any(held > 0 for _, _, held, _ in group_written)  # some objects waited for a later tile
    assert len(whole) == len(groups) > 200
    assert _objects(whole) == _objects(groups)
    assert np.array_equal(whole_labels, group_labels)
    assert shapely.coverage_is_valid(groups.geometry.values)
    assert shapely.area(shapely.symmetric_difference(shapely.union_all(whole.geometry.values),
                                                     shapely.union_all(groups.geometry.values))) == 0


def _cover_scene(path, size_px=768):
    """One soil over the whole scene with 120 soft-edged patches of other colours: where a patch's
    edge falls differs a little between two tiles, so patches overlap the soil of the next tile."""
    from rasterio.transform import from_origin
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    pixels = np.empty((3, size_px, size_px), np.float32)
    pixels[:] = np.array([150, 120, 90], np.float32)[:, None, None]
    for _ in range(120):
        row, col = rng.integers(0, size_px - 40, 2)
        height, width = rng.integers(16, 40, 2)
        pixels[:, row:row + height, col:col + width] = rng.choice([[40, 110, 40], [200, 200, 210], [60, 60, 70]])[:, None, None]
    pixels = gaussian_filter(pixels, (0, 2, 2)) + rng.normal(0, 2, pixels.shape)
    profile = dict(driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 4000000, 0.5, 0.5))
    with rasterio.open(path, "w", **profile) as out:
        out.write(np.clip(pixels, 0, 255).astype(np.uint8))


def test_objects_on_a_cover_that_spans_the_scene_are_written_before_its_end(tmp_path, monkeypatch):
    """A cover over every tile (a desert, a sea) is one object, complete only at the scene's last
    tile. Objects on it that are smaller than its fragments are written as their neighbourhood is
    read and cut out of the cover's fragments, not held to the end: same output as holding all."""
    scene = tmp_path / "cover.tif"
    _cover_scene(scene)
    whole, whole_labels, _ = _run(tmp_path, "whole", monkeypatch, 10**9, scene)
    groups, group_labels, written = _run(tmp_path, "groups", monkeypatch, 1, scene)
    cover = whole.loc[whole["area_px"].idxmax()]
    assert cover["n_fragments"] >= 16 and cover["area_px"] > 0.6 * 768**2  # one soil over all 16 tiles
    assert _objects(whole) == _objects(groups)
    assert np.array_equal(whole_labels, group_labels)
    assert shapely.coverage_is_valid(groups.geometry.values)
    last_tile = max(tile for tile, *_ in written)
    before_end = sum(ready for tile, ready, _, _ in written if tile < last_tile)
    at_end = sum(ready for tile, ready, _, _ in written if tile == last_tile)
    assert sum(cuts for *_, cuts in written) > 10  # objects on the cover were cut out of its fragments
    # held objects left for the scene's end: those of the last row of tiles (holding every object
    # that overlaps the cover's fragments until the cover is complete left 69 of 191, ratio 1.8)
    assert before_end > 3 * at_end


def _held(geometry, order: int, ready_after: int):
    return assembly._Pending((0, order), assembly.HeldObject.candidate(geometry, np.zeros(2), 1.0), ready_after)


def test_a_held_object_waits_for_its_own_neighbours_only():
    """Objects overlapping in a chain (the overlap bands of two tiles' partitions) do not wait for
    the chain's far end: A and B are decided at tile 1 although B overlaps C, which waits for
    tile 5. C keeps its rank and loses what B (smaller, on top) takes; E, larger than the waiting
    D on top of it, is written without D's pixels."""
    a, b, c = shapely.box(0, 0, 10, 10), shapely.box(8, 0, 30, 10), shapely.box(28, 0, 60, 10)
    d, e = shapely.box(115, 0, 125, 10), shapely.box(100, 0, 120, 10)
    pending = [_held(a, 0, 0), _held(b, 1, 1), _held(c, 2, 5), _held(d, 3, 5), _held(e, 4, 1)]
    ready, held, cuts, on_held = assembly._split_ready(pending, [], 1, disjoint=True)
    assert [p.order[1] for p in ready] == [0, 1, 4] and [p.order[1] for p in held] == [2, 3] and cuts == []
    assert shapely.equals(ready[2].row.geometry, shapely.box(100, 0, 115, 10))  # E without D
    assert on_held == [(1, 0)]  # B on top of C
    held = assembly._cut_held(held, ready, on_held)
    assert shapely.equals(held[0].row.geometry, shapely.box(30, 0, 60, 10)) and held[0].row.rank_area_px == 320
    assert held[1].row.geometry is d
