"""A cheap upper bound of SAM's stability score, to reject unstable masks before upsampling.

segment_anything scores each mask's stability on its full-resolution logits, so every prompt's
three masks are upsampled to the image size (5-10 ms each for 1024 px on a CPU core) even when
most are then rejected. ``StabilityBound`` bounds the score from above on the 256x256 logits
(two small pooling passes per mask), so masks that surely fail ``stability_score_thresh`` are
dropped without being upsampled; the survivors are then scored exactly.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class StabilityBound:
    """Upper bound of the full-resolution stability score, computed on 256x256 logits.

    ``Sam.postprocess_masks`` upsamples bilinearly (to 1024, crop, to the image size), so every
    output pixel is a convex combination of a few neighbouring low-resolution logits: it exceeds
    a threshold only if their maximum does, and surely exceeds it if their minimum does. Each
    output row (column) is charged to the first low-resolution row (column) of its support, and a
    sliding max/min over the longest support covers every support. Counting output pixels that
    way bounds the intersection from above and the union from below. Cost per mask: two small
    pooling passes on the 256x256 logits instead of a 1024x1024 upsampling.
    """

    def __init__(self, input_size, orig_size, padded: int | tuple[int, int], low_len: int, device) -> None:
        """``padded``: the size logits are first upsampled to (SAM's square model input), or
        (rows, cols) of it; SAM 2 upsamples straight to the image: ``padded = input_size = orig_size``."""
        pad_rows, pad_cols = (padded, padded) if isinstance(padded, int) else padded
        self.row_weight, self.row_window = self._axis(low_len, pad_rows, input_size[0], orig_size[0])
        self.col_weight, self.col_window = self._axis(low_len, pad_cols, input_size[1], orig_size[1])
        self.row_weight = self.row_weight.to(device)
        self.col_weight = self.col_weight.to(device)

    @staticmethod
    def _axis(low_len: int, padded: int, input_len: int, out_len: int):
        def support(n_in: int, n_out: int):
            src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
            first = np.floor(src).astype(np.int64)
            return first, np.minimum(first + 1, n_in - 1)

        lo1, hi1 = support(low_len, padded)
        lo1, hi1 = lo1[:input_len], hi1[:input_len]
        if out_len == input_len:
            lo, hi = lo1, hi1  # same size: bilinear is the identity
        else:
            p0, p1 = support(input_len, out_len)
            p0 = np.maximum(p0 - 1, 0)  # one extra pixel each side: float rounding of indexes
            p1 = np.minimum(p1 + 1, input_len - 1)
            lo, hi = lo1[p0], hi1[p1]
        weight = np.bincount(lo, minlength=low_len).astype(np.float64)
        return torch.from_numpy(weight), int((hi - lo).max()) + 1

    def _pool(self, low: torch.Tensor, op) -> torch.Tensor:
        """Sliding max (or min) over the windows that start at each logit, rows then columns."""
        out = low.clone()
        for k in range(1, self.row_window):
            out[:, :-k] = op(out[:, :-k], low[:, k:])
        pooled = out.clone()
        for k in range(1, self.col_window):
            pooled[:, :, :-k] = op(pooled[:, :, :-k], out[:, :, k:])
        return pooled

    def _count(self, hits: torch.Tensor) -> torch.Tensor:
        return (hits.double() @ self.col_weight) @ self.row_weight

    def upper(self, low: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
        """(K,) upper bounds of ``calculate_stability_score`` for (K, 256, 256) logits."""
        tol = 1e-4  # float rounding of the interpolation, in logit units
        hi = self._pool(low, torch.maximum)
        inter = self._count(hi + tol * (1 + hi.abs()) > threshold + offset)
        lo = self._pool(low, torch.minimum)
        union = self._count(lo - tol * (1 + lo.abs()) > threshold - offset)
        bound = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, math.inf))
        return bound.float()
