"""geoalps.engines.sam.postprocess: upsampling and boxes equal segment_anything's bit for bit;
small-region removal fills holes and drops islands as segment_anything's OpenCV code does."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import batched_mask_to_box

from geoalps.engines.sam.postprocess import boxes_from_logits, remove_small_regions, upsample_logits
from geoalps.engines.sam.sam_masks import SamMasks


@pytest.mark.parametrize(
    "input_size, orig_size",
    [((1024, 1024), (1024, 1024)), ((768, 1024), (300, 400)), ((1024, 768), (1024, 768))],
)
def test_upsample_logits_is_postprocess_masks_bit_for_bit(model, input_size, orig_size):
    low = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0)) * 5
    expected = model.postprocess_masks(low[:, None], input_size, orig_size)[:, 0]
    assert torch.equal(upsample_logits(model, low, input_size, orig_size), expected)


def test_boxes_from_logits_equal_segment_anything_boxes():
    logits = torch.randn(6, 50, 70, generator=torch.Generator().manual_seed(0)) - 2.5
    logits[0] = -1.0  # empty mask
    logits[1, 10, 20] = 3.0  # one pixel
    assert torch.equal(boxes_from_logits(logits, 0.0), batched_mask_to_box(logits > 0.0))


def test_remove_small_regions_fills_holes_and_drops_islands():
    mask = np.zeros((40, 40), bool)
    mask[5:30, 5:30] = True
    mask[10, 10] = False  # a one-pixel hole
    mask[35, 35] = True  # a one-pixel island
    result = SamMasks(
        crops=[mask[5:36, 5:36].copy()],
        scores=np.ones(1, np.float32),
        stability=np.ones(1, np.float32),
        boxes=np.array([[5, 5, 35, 35]]),
        points=np.zeros((1, 2), np.float32),
        crop_boxes=np.array([[0, 0, 40, 40]]),
        image_hw=(40, 40),
        embedding=None,
        input_size=(1024, 1024),
    )
    cleaned = remove_small_regions(result, min_area=5, nms_thresh=0.7)
    expected = np.zeros((40, 40), bool)
    expected[5:30, 5:30] = True
    np.testing.assert_array_equal(cleaned.dense(0), expected)
    assert cleaned.boxes.tolist() == [[5, 5, 29, 29]]
    np.testing.assert_array_equal(cleaned.crops[0], np.ones((25, 25), bool))  # cropped to the new box
