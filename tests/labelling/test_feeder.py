"""The run's bookkeeping in pass 1: k-means fed in plan order whatever order tiles finish in,
and the tile figures summed on the way (geoalps.labelling.feeder)."""
from __future__ import annotations

import numpy as np
import shapely

from geoalps.inputs.tiles import plan_tiles
from geoalps.labelling.feeder import OrderedFeeder, TileSummary
from geoalps.objects.tile_result import TileResult
from geoalps.options import LabelOptions

BLOCKS = ("shape", "spectral")


def _results() -> dict:
    """Six tiles: random objects (two feature blocks), one tile without objects and skipped."""
    rng = np.random.default_rng(5)
    results = {}
    for number, tile in enumerate(plan_tiles(600, 400, 256, 32)):
        n = 0 if number == 3 else int(rng.integers(5, 30))
        geometries = np.array([shapely.box(i, 0, i + 1, 1) for i in range(n)], dtype=object)
        features = {"shape": rng.normal(size=(n, 3)).astype(np.float32),
                    "spectral": rng.normal(number, 1.0, size=(n, 4)).astype(np.float32)}
        results[tile.key] = TileResult(tile, geometries, rng.random(n), rng.integers(50, 500, n), np.zeros(n, bool),
                                       np.zeros(n, bool), features, skipped=number == 3,
                                       engine_seconds=0.25 * (number + 1), seconds=0.5 * (number + 1))
    return results


def _fed(order: list[str], results: dict, stored: set[str] = frozenset()) -> OrderedFeeder:
    """Feed the tiles as they would finish in ``order``; ``stored`` ones were finished before
    (a resumed run: read back through ``load``)."""
    tiles = [r.tile for r in results.values()]
    feeder = OrderedFeeder(tiles, results.__getitem__, BLOCKS, None, LabelOptions(classes=3), None)
    done = set(stored)
    feeder.advance(done)
    for key in order:
        done.add(key)
        feeder.advance(done, fresh={key: results[key]})
    return feeder


def test_the_model_does_not_depend_on_the_order_tiles_finish_in():
    results = _results()
    keys = list(results)
    in_order = _fed(keys, results)
    shuffled = _fed(list(np.random.default_rng(1).permutation(keys)), results)
    resumed = _fed(keys[3:][::-1], results, stored=set(keys[:3]))
    assert in_order.next == shuffled.next == resumed.next == len(keys) and not shuffled.waiting
    for other in (shuffled, resumed):
        assert other.clusterer.block_widths == {"shape": 3, "spectral": 4}
        assert other.clusterer.n_seen == in_order.clusterer.n_seen
    everything = np.concatenate([r.feature_matrix(BLOCKS) for r in results.values() if len(r)])
    for feeder in (in_order, shuffled, resumed):
        feeder.clusterer.finish()
    for other in (shuffled, resumed):  # the same model: the same classes and centres (same arithmetic)
        np.testing.assert_allclose(other.clusterer.class_centres(), in_order.clusterer.class_centres(),
                                   rtol=1e-6, atol=1e-6)
        assert np.array_equal(other.clusterer.predict(everything), in_order.clusterer.predict(everything))
    # the figures: one skipped tile, seconds summed over all six (binary fractions: exact sums)
    for feeder in (in_order, shuffled, resumed):
        assert feeder.skipped == 1
        assert feeder.engine_seconds == 0.25 * 21 and feeder.tile_seconds == 0.5 * 21


def test_a_summary_keeps_features_and_figures_never_polygons():
    results = _results()
    empty, full = (TileSummary.of(r, BLOCKS) for r in (results[list(results)[3]], results[list(results)[0]]))
    assert empty.features is None and empty.area_px is None and empty.skipped
    assert full.features.shape == (len(results[list(results)[0]]), 7) and full.block_widths == {"shape": 3, "spectral": 4}
    assert not hasattr(full, "geometries")


def test_a_tile_with_fit_regions_is_learnt_from_them():
    """k-means learns from the fit regions (``TileResult.fit_sample``) when a tile has them, from
    its objects otherwise; pass 2 still classifies the objects (``features``)."""
    result = next(iter(_results().values()))
    fit = {"shape": np.zeros((2, 3), np.float32), "spectral": np.arange(8, dtype=np.float32).reshape(2, 4)}
    with_fit = TileResult(result.tile, result.geometries, result.scores, result.area_px, result.truncated,
                          result.seam_candidate, result.features, fit_features=fit,
                          fit_area_px=np.array([100, 200]))
    summary = TileSummary.of(with_fit, BLOCKS)
    np.testing.assert_array_equal(summary.features, np.concatenate([fit["shape"], fit["spectral"]], axis=1))
    np.testing.assert_array_equal(summary.area_px, [100, 200])
    assert summary.block_widths == {"shape": 3, "spectral": 4}
    plain = TileSummary.of(result, BLOCKS)
    np.testing.assert_array_equal(plain.area_px, result.area_px)
    assert len(plain.features) == len(result)
