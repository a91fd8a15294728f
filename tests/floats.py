"""Float comparisons sized to float32 and to the values' magnitude, not to one CPU's rounding.

Two computations of the same float32 result (a rearranged decoder, a batched encoder, another
CPU's vector width) sum in a different order; each sum then differs by a few units of float32
precision *of the largest terms*, not of each output value. So the tolerance here is
``ulps * eps32 * max|expected|`` over the whole array: a logit of 90 may move by 1e-5 while a
logit near 0 moves by as much. 128 units covers reductions over thousands of terms (the error
seen across CPU kinds is 2-3 units) and still catches any real change, which moves values by
percent, not by parts per million.
"""
from __future__ import annotations

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _as_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=np.float64)


def float32_tolerance(expected, ulps: float = 128) -> float:
    """``ulps`` units of float32 precision at the largest magnitude in ``expected``."""
    values = _as_numpy(expected)
    scale = float(np.nanmax(np.abs(values))) if values.size else 0.0
    return ulps * FLOAT32_EPS * max(scale, 1.0)


def assert_float32_close(actual, expected, ulps: float = 128, equal_nan: bool = False) -> None:
    """Every value of ``actual`` within :func:`float32_tolerance` of ``expected`` (same shape)."""
    got, want = _as_numpy(actual), _as_numpy(expected)
    assert got.shape == want.shape, f"shapes differ: {got.shape} != {want.shape}"
    tolerance = float32_tolerance(want, ulps)
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance, equal_nan=equal_nan)
