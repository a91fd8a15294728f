import numpy as np
import pytest

from geoalps.inputs.tiles import plan_tiles


@pytest.mark.parametrize("width,height,tile,overlap", [
    (1280, 1280, 1024, 128), (2000, 700, 512, 64), (300, 200, 1024, 128), (1025, 1024, 1024, 0), (5000, 333, 256, 128),
])
def test_cores_partition_the_scene_and_windows_stay_inside(width, height, tile, overlap):
    tiles = plan_tiles(width, height, tile, overlap)
    owner = np.zeros((height, width), dtype=np.int32)
    for t in tiles:
        c0, r0, c1, r1 = t.core
        owner[r0:r1, c0:c1] += 1
        # the core lies inside the window, the interior inside the core
        assert t.col_off <= c0 < c1 <= t.col_off + t.width
        assert t.row_off <= r0 < r1 <= t.row_off + t.height
        i0, j0, i1, j1 = t.interior
        assert c0 <= i0 <= i1 <= c1 or i0 == i1
        assert 0 <= t.col_off and t.col_off + t.width <= width
        assert 0 <= t.row_off and t.row_off + t.height <= height
        assert t.width == min(tile, width) and t.height == min(tile, height)
    assert (owner == 1).all(), "every pixel belongs to exactly one tile core"


def test_interior_is_seen_by_no_other_tile():
    tiles = plan_tiles(1500, 1100, 512, 96)
    seen = np.zeros((1100, 1500), dtype=np.int32)
    for t in tiles:
        seen[t.row_off:t.row_off + t.height, t.col_off:t.col_off + t.width] += 1
    for t in tiles:
        c0, r0, c1, r1 = t.interior
        assert (seen[r0:r1, c0:c1] == 1).all()


def test_neighbouring_windows_overlap_by_at_least_the_overlap():
    tiles = plan_tiles(3000, 600, 1024, 128)
    starts = sorted({t.col_off for t in tiles})
    assert all(b - a <= 1024 - 128 for a, b in zip(starts, starts[1:]))
    assert tiles[0].key == "s0_r0_c0"
