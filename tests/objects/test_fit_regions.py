"""The regions k-means learns from when they are not the objects (``TileMasks.fit_regions``)."""
from __future__ import annotations

import numpy as np

from geoalps.objects.masks import TileMasks


def test_each_kept_mask_joins_the_region_holding_most_of_it():
    # Pieces 1..4 of an 8 x 8 tile; fit regions: left half 1, right half 2.
    labels = np.zeros((8, 8), np.int32)
    labels[:, :3] = 1          # all in the left region
    labels[:4, 3:6] = 2        # 4 x 1 px left of the middle, 4 x 2 px right: belongs right
    labels[4:, 3:] = 3         # 4 x 1 left, 4 x 4 right: right
    labels[:4, 6:] = 4         # right; dropped below
    fit = np.zeros((8, 8), np.int32)
    fit[:, :4], fit[:, 4:] = 1, 2
    masks = TileMasks.from_labels(labels, np.ones(5, np.float32))
    masks.fit_labels = fit
    kept = masks.select(np.array([True, True, True, False]))
    regions = kept.fit_regions()
    image = regions.index_image()
    # piece 1 alone; pieces 2 (12 px, 8 right) and 3 (20 px, 16 right) together in the right half
    left, right = image[0, 0], image[0, 4]
    assert left != right and left > 0 and right > 0
    np.testing.assert_array_equal(image == left, labels == 1)
    np.testing.assert_array_equal(image == right, (labels == 2) | (labels == 3))
    assert (image[labels == 4] == 0).all(), "a dropped mask is in no fit region"
    assert sorted(regions.areas.tolist()) == [24, 32]


def test_without_fit_labels_there_are_no_fit_regions():
    labels = np.ones((4, 4), np.int32)
    assert TileMasks.from_labels(labels, np.ones(2, np.float32)).fit_regions() is None


def test_selection_and_the_valid_clip_keep_the_fit_labels_in_step():
    from geoalps.objects.masks import filter_by_area

    labels = np.ones((6, 6), np.int32)
    labels[:, 3:] = 2
    masks = TileMasks.from_labels(labels, np.ones(3, np.float32))
    masks.fit_labels = np.ones((6, 6), np.int32)
    valid = np.ones((6, 6), bool)
    valid[0] = False
    kept = filter_by_area(masks, valid, 1, 1.0)
    assert kept.fit_labels is not None and (kept.fit_labels[0] == 0).all()
    assert kept.fit_regions().areas.tolist() == [30]
