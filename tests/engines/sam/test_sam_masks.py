"""geoalps.engines.sam.sam_masks: SamMasks keeps segment_anything's conventions and hands its
crops to geoalps's TileMasks as they are."""
from __future__ import annotations

import numpy as np

from geoalps.engines.sam.sam_masks import SamMasks


def three_masks() -> SamMasks:
    """A 4 x 6 image: a 2 x 3 block, an empty mask (segment_anything keeps those) and a pixel."""
    return SamMasks(
        crops=[np.ones((2, 3), bool), np.zeros((1, 1), bool), np.ones((1, 1), bool)],
        scores=np.array([0.9, 0.8, 0.7], np.float32),
        stability=np.ones(3, np.float32),
        boxes=np.array([[1, 2, 3, 3], [0, 0, 0, 0], [5, 0, 5, 0]]),  # XYXY, inclusive
        points=np.zeros((3, 2), np.float32),
        crop_boxes=np.tile([0, 0, 6, 4], (3, 1)),
        image_hw=(4, 6),
        embedding=np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64),
        input_size=(683, 1024),  # a 4 x 6 image resized to a 1024 px long side
    )


def test_dense_pastes_a_crop_at_its_box():
    expected = np.zeros((4, 6), bool)
    expected[2:4, 1:4] = True
    np.testing.assert_array_equal(three_masks().dense(0), expected)
    assert not three_masks().dense(1).any()


def test_filter_keeps_every_field_in_step():
    kept = three_masks().filter(np.array([False, True, True]))
    assert len(kept) == 2 and kept.boxes.tolist() == [[0, 0, 0, 0], [5, 0, 5, 0]]
    assert kept.scores.tolist() == [np.float32(0.8), np.float32(0.7)]
    assert [c.shape for c in kept.crops] == [(1, 1), (1, 1)]
    assert kept.image_hw == (4, 6)


def test_to_tile_masks_drops_empty_masks_and_gives_half_open_row_col_boxes():
    masks = three_masks()
    tile = masks.to_tile_masks()
    assert len(tile) == 2 and tile.tile_shape == (4, 6)
    assert tile.boxes.tolist() == [[2, 1, 4, 4], [0, 5, 1, 6]]  # (row0, col0, row1, col1)
    assert tile.crops[0] is masks.crops[0]  # handed on, not copied
    np.testing.assert_array_equal(tile.dense(0), masks.dense(0))
    np.testing.assert_array_equal(tile.scores, np.array([0.9, 0.7], np.float32))
    assert tile.embedding is masks.embedding
    assert tile.embedding_extent == (43, 64)  # ceil(683 / 1024 * 64) rows of the 64 x 64 grid
