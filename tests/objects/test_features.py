"""Per-mask features: band means, spectral indices from known bands, the blocks a run clusters."""
from __future__ import annotations

import numpy as np
import pytest

from geoalps.errors import OptionError
from geoalps.objects.features import (
    band_roles,
    compute_features,
    feature_blocks,
    spectral_indices,
)
from geoalps.objects.masks import TileMasks


def test_blocks_for_each_mode():
    assert feature_blocks("auto", False) == ("spectral", "index")
    assert feature_blocks("auto", True) == ("sam", "spectral", "index")
    assert feature_blocks("spectral", True) == ("spectral", "index")
    with pytest.raises(OptionError):
        feature_blocks("sam", False)


@pytest.mark.parametrize("names, n, expected", [
    (("blue", "green", "red", "nir"), 4, (2, 1, 0, 3)),  # roles as geoalps.inputs.bands decides them
    (("red", "green", "blue", "nir"), 4, (0, 1, 2, 3)),
    ((None, None, None, None), 4, (None, None, None, None)),  # unknown: no band order is assumed
    (("red", "green", "blue"), 3, (0, 1, 2, None)),
    ((), 3, (None, None, None, None)),
    (("coastal", "blue", "green", "red", "nir", "swir1", "swir2"), 7, (3, 2, 1, 4)),
    ((None,), 1, (None, None, None, None)),
])
def test_band_roles(names, n, expected):
    roles = band_roles(names, n)
    assert tuple(roles[k] for k in ("red", "green", "blue", "nir")) == expected


def test_indices_ndvi_ndwi_and_rgb_fallback():
    low, high = np.zeros(4), np.full(4, 100.0)
    means = np.array([[0.1, 0.2, 0.1, 0.5], [0.3, 0.3, 0.3, 0.3]])  # vegetation, grey
    idx = spectral_indices(means, low, high, ("red", "green", "blue", "nir"), 4)
    assert idx[0, 0] == pytest.approx((50 - 10) / 60) and idx[0, 1] == pytest.approx((20 - 50) / 70)
    assert idx[1].tolist() == [0.0, 0.0]
    rgb = spectral_indices(means[:, :3], low[:3], high[:3], ("red", "green", "blue"), 3)
    assert rgb[0, 0] == pytest.approx((20 - 10) / 30) and rgb[0, 1] == pytest.approx((40 - 10 - 10) / 40)



def test_indices_without_band_roles_need_no_order():
    """Bands of unknown roles get the spectrum's range ratio, the same in any band order, and the
    last band against the first, whose sign a reversed order flips; both are ratios, so a scene
    twice as bright gives the same values. A flat (grey) spectrum gives zeros."""
    low, high = np.zeros(4), np.full(4, 100.0)
    means = np.array([[0.1, 0.2, 0.1, 0.5], [0.3, 0.3, 0.3, 0.3], [0.4, 0.3, 0.2, 0.1]])
    unknown = ("a1", "a2", "a3", "a4")
    idx = spectral_indices(means, low, high, unknown, 4)
    np.testing.assert_allclose(idx[:, 0], [(50 - 10) / 60, 0.0, (40 - 10) / 50], rtol=1e-6)
    np.testing.assert_allclose(idx[:, 1], [(50 - 10) / 60, 0.0, (10 - 40) / 50], rtol=1e-6)
    shuffled = spectral_indices(means[:, [2, 0, 3, 1]], low, high, unknown, 4)
    np.testing.assert_allclose(shuffled[:, 0], idx[:, 0], rtol=1e-6)
    reversed_ = spectral_indices(means[:, ::-1], low, high, unknown, 4)
    np.testing.assert_allclose(reversed_, idx * [1, -1], rtol=1e-6, atol=1e-7)
    brighter = spectral_indices(means, low, high * 2, unknown, 4)
    np.testing.assert_allclose(brighter, idx, rtol=1e-6, atol=1e-7)
    assert not spectral_indices(means[:, :1], low[:1], high[:1], ("a1",), 1).any(), "one band: no ratio"


def test_compute_features_disjoint_masks_means_and_indices():
    labels = np.zeros((8, 8), np.int32)
    labels[:4], labels[4:] = 1, 2
    masks = TileMasks.from_labels(labels, np.array([0.0, 1.0, 1.0]))
    data = np.zeros((4, 8, 8))
    data[:, :4] = np.array([10, 20, 10, 50])[:, None, None]
    data[:, 4:] = np.array([40, 40, 40, 40])[:, None, None]
    out = compute_features(masks, ("spectral", "index"), data, (np.zeros(4), np.full(4, 100.0)),
                           ("red", "green", "blue", "nir"))
    assert out["spectral"].shape == (2, 4) and out["index"].shape == (2, 2)
    assert out["spectral"][0] == pytest.approx([0.1, 0.2, 0.1, 0.5])
    assert out["index"][0, 0] == pytest.approx(40 / 60)
    assert out["index"][1].tolist() == [0.0, 0.0]


def test_models_saved_before_the_index_block_keep_their_features():
    assert feature_blocks("auto", False, ("spectral", "shape")) == ("spectral", "shape")
    assert feature_blocks("auto", False, ("spectral", "index")) == ("spectral", "index")
    with pytest.raises(OptionError):
        feature_blocks("auto", False, ("sam", "spectral", "shape"))
    labels = np.zeros((8, 8), np.int32)
    labels[:4], labels[4:] = 1, 2
    masks = TileMasks.from_labels(labels, np.array([0.0, 1.0, 1.0]))
    data = np.random.default_rng(0).uniform(0, 100, (3, 8, 8))
    out = compute_features(masks, ("spectral", "shape"), data, (np.zeros(3), np.full(3, 100.0)))
    assert out["spectral"].shape == (2, 6) and out["shape"].shape == (2, 4) and "index" not in out
    assert out["spectral"][0, 3] == pytest.approx(data[0, :4].std() / 100, rel=1e-5)
