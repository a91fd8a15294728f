"""geoalps.train.mim: SimMIM masks, mask token after patch embedding, loss on masked pixels only."""
from __future__ import annotations

import torch

from geoalps.train.mim import (
    SimMIMHead,
    masked_reconstruction_loss,
    random_patch_mask,
    upsample_mask,
)
from geoalps.train.models import build_model, make_arch

from train.train_scenes import _train_test_environment  # noqa: F401 - fixtures used by name


def test_mask_has_the_requested_share_of_patches():
    mask = random_patch_mask(batch=5, tile_px=64, mask_patch_px=16, ratio=0.6, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, 4, 4)
    assert mask.sum(dim=(1, 2)).tolist() == [round(0.6 * 16)] * 5
    assert upsample_mask(mask, 16).shape == (5, 64, 64)


def test_loss_counts_masked_pixels_only():
    g = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 4, 32, 32, generator=g), torch.randn(2, 4, 32, 32, generator=g)
    pixel_mask = upsample_mask(random_patch_mask(2, 32, 8, 0.5, g), 8)
    loss = masked_reconstruction_loss(prediction, target, pixel_mask)

    changed = prediction.clone()
    changed[~pixel_mask.unsqueeze(1).expand_as(changed)] += 100.0  # anything outside the mask
    assert torch.allclose(masked_reconstruction_loss(changed, target, pixel_mask), loss)

    changed = prediction.clone()
    changed[pixel_mask.unsqueeze(1).expand_as(changed)] += 1.0
    assert not torch.allclose(masked_reconstruction_loss(changed, target, pixel_mask), loss)

    expected = (prediction - target).abs()[pixel_mask.unsqueeze(1).expand_as(prediction)].mean()
    assert torch.allclose(loss, expected)


def test_nodata_pixels_are_excluded_too():
    prediction, target = torch.zeros(1, 2, 8, 8), torch.ones(1, 2, 8, 8)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    valid = torch.zeros(1, 8, 8, dtype=torch.bool)
    valid[:, :4] = True
    target[:, :, 4:] = 50.0  # invalid pixels would dominate if counted
    assert masked_reconstruction_loss(prediction, target, mask, valid).item() == 1.0


def test_masked_patches_see_only_the_mask_token():
    torch.manual_seed(0)
    model = build_model(make_arch("tiny", in_chans=5, num_classes=2)).eval()
    a, b = torch.randn(1, 5, 64, 64), torch.randn(1, 5, 64, 64)
    everything = torch.ones(1, 16, 16, dtype=torch.bool)  # the 4 px patch grid of a 64 px tile
    with torch.no_grad():
        out_a, out_b = model.backbone(a, everything), model.backbone(b, everything)
        plain_a = model.backbone(a)
    assert all(torch.allclose(x, y) for x, y in zip(out_a, out_b))  # input fully hidden
    assert not torch.allclose(out_a[-1], plain_a[-1])


def test_head_reconstructs_every_band_at_input_resolution():
    head = SimMIMHead(in_channels=192, bands=5, reduction=32)
    assert head(torch.randn(2, 192, 2, 2)).shape == (2, 5, 64, 64)
