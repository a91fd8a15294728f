"""SimMIM (Xie et al. 2022) for the Swin backbone: mask patches, reconstruct the masked pixels.

Masking is on a coarse patch grid (``mask_patch_px``, 32 in the paper) and is applied after
patch embedding by blending in the backbone's learnable mask token. A light head (one 1x1 conv
and a pixel shuffle) turns the stride-32 map back into every band's pixels; the L1 loss counts
masked pixels only, so the network cannot score by copying what it sees.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimMIMHead(nn.Module):
    """1x1 conv to ``reduction**2 * bands`` channels, pixel-shuffled to input resolution."""

    def __init__(self, in_channels: int, bands: int, reduction: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, reduction**2 * bands, 1)
        self.shuffle = nn.PixelShuffle(reduction)

    def forward(self, coarsest: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.proj(coarsest))


def random_patch_mask(
    batch: int, tile_px: int, mask_patch_px: int, ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Boolean (B, n, n) mask on the ``mask_patch_px`` grid with exactly round(ratio * n * n) True per tile."""
    n = tile_px // mask_patch_px
    count = max(1, min(n * n - 1, round(ratio * n * n))) if n * n > 1 else 1
    scores = torch.rand(batch, n * n, generator=generator)
    order = scores.argsort(dim=1)
    mask = torch.zeros(batch, n * n, dtype=torch.bool)
    mask.scatter_(1, order[:, :count], True)
    return mask.view(batch, n, n)


def upsample_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Repeat each cell of a (B, n, n) mask ``factor`` times along both axes."""
    return mask.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)


def masked_reconstruction_loss(
    prediction: torch.Tensor, target: torch.Tensor, pixel_mask: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean L1 error over masked (and valid) pixels and all bands; pixels outside do not count.

    Args:
        prediction, target: (B, C, H, W), target already normalised like the network input.
        pixel_mask: (B, H, W) bool, True where the input was masked.
        valid: (B, H, W) bool, False on nodata pixels (excluded too).
    """
    weight = pixel_mask if valid is None else pixel_mask & valid
    weight = weight.unsqueeze(1).to(prediction.dtype)
    error = F.l1_loss(prediction, target, reduction="none") * weight
    return error.sum() / (weight.sum() * prediction.shape[1]).clamp_min(1.0)
