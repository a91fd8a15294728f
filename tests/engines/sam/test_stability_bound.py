"""geoalps.engines.sam.stability_bound: the bound on the low-resolution logits is never below
segment_anything's stability score, and tight enough to reject unstable masks."""
from __future__ import annotations

import pytest
import torch

from geoalps.engines.sam.stability_bound import StabilityBound


@pytest.mark.parametrize(
    "input_size, orig_size",
    [((1024, 1024), (1024, 1024)), ((768, 1024), (300, 400)), ((1024, 683), (1500, 1000))],
)
def test_stability_bound_is_an_upper_bound(model, input_size, orig_size):
    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(
        torch.randn(12, 1, 16, 16, generator=gen), (256, 256), mode="bilinear"
    )
    low = base[:, 0] * torch.linspace(0.5, 20, 12)[:, None, None]  # smooth, like SAM logits
    exact = torch.stack(
        [
            torch.nan_to_num(
                (up > 1).sum() / (up > -1).sum(), nan=0.0
            )
            for up in model.postprocess_masks(low[:, None], input_size, orig_size)[:, 0]
        ]
    )
    bound = StabilityBound(input_size, orig_size, 1024, 256, "cpu").upper(low, 0.0, 1.0)
    assert (bound >= exact - 1e-6).all()
    assert (bound < exact + 0.3).all()  # and tight enough to reject clearly unstable masks
    assert (bound < 0.9).sum() >= 3
