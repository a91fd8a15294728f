"""geoalps.engines.sam.exact_cells: stability counts, boxes and masks from the 256x256 logits'
cells equal segment_anything's full-resolution ones bit for bit (1024 px long side)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

from geoalps.engines.sam.exact_cells import ExactCells


def smooth_logits(n: int, seed: int, ties: bool = False) -> torch.Tensor:
    """(n, 256, 256) SAM-like logits: smooth blobs from strong to weak contrast."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(
        torch.randn(n, 1, 16, 16, generator=gen), (256, 256), mode="bilinear"
    )[:, 0]
    low = base * torch.linspace(0.5, 50, n)[:, None, None]
    if ties:  # multiples of 1/4: many upsampled pixels land exactly on the thresholds
        low = (low * 4).round() / 4
    return low


@pytest.mark.parametrize(
    "out_hw", [(1024, 1024), (1024, 683), (600, 1024), (1023, 1022), (5, 1024), (1024, 1)]
)
@pytest.mark.parametrize("ties", [False, True])
def test_exact_cells_equal_segment_anything_stability_boxes_and_masks(model, out_hw, ties):
    low = smooth_logits(10, seed=out_hw[1], ties=ties)
    low[0] = -3.0  # empty mask
    low[1, 120, 7] = 2.0  # a single bump
    low[2, 0, 255] = 1.0  # exactly on the stability threshold at an image corner
    assert ExactCells.applies(model, out_hw, out_hw)
    up = model.postprocess_masks(low[:, None], out_hw, out_hw)[:, 0]
    threshold, offset = model.mask_threshold, 1.0

    counts, boxes, masks = ExactCells(out_hw, 256, "cpu")(
        low, [threshold + offset, threshold - offset], threshold
    )

    stability = counts[:, 0].int() / counts[:, 1].int()
    expected = calculate_stability_score(up, threshold, offset)
    assert torch.equal(stability.nan_to_num(-1.0), expected.nan_to_num(-1.0))
    assert torch.equal(boxes, batched_mask_to_box(up > threshold))
    for cell_mask, exact in zip(masks, up > threshold):
        np.testing.assert_array_equal(cell_mask.to_mask(out_hw), exact.numpy())


def test_no_logits_give_no_masks():
    counts, boxes, masks = ExactCells((1024, 1024), 256, "cpu")(torch.zeros(0, 256, 256), [1.0, -1.0], 0.0)
    assert counts.shape == (0, 2) and boxes.shape == (0, 4) and masks == []


def test_cell_mask_of_a_box_is_that_part_of_the_mask():
    """``to_mask(out_hw, box)`` unpacks only the cells the box covers: every box, from a corner
    pixel or the 2-pixel borders to the whole image, gives that part of the full mask."""
    low = smooth_logits(4, seed=3)
    low[0, 100:140, 60:200] = 5.0  # a block of whole cells beside smooth boundaries
    out_hw = (1024, 1000)
    _, boxes, masks = ExactCells(out_hw, 256, "cpu")(low, [1.0, -1.0], 0.0)
    rng = np.random.default_rng(0)
    h, w = out_hw
    for cell_mask, mask_box in zip(masks, boxes.tolist()):
        full = cell_mask.to_mask(out_hw)
        assert full.any()
        corners = [(x0, y0, x1, y1) for x0, x1 in ((0, 1), (2, 5), (997, 999), (0, w - 1))
                   for y0, y1 in ((0, 0), (3, 6), (1021, 1023))]
        random = []
        for _ in range(20):
            (x0, x1), (y0, y1) = sorted(rng.integers(0, w, 2)), sorted(rng.integers(0, h, 2))
            random.append((int(x0), int(y0), int(x1), int(y1)))
        for x0, y0, x1, y1 in [tuple(mask_box), *corners, *random]:
            got = cell_mask.to_mask(out_hw, (x0, y0, x1, y1))
            np.testing.assert_array_equal(got, full[y0 : y1 + 1, x0 : x1 + 1])
