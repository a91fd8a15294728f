"""The segment-oracle ceiling: each region takes its majority true class (DESIGN.md), by hand and
through ``geoalps evaluate`` on a GeoPackage of two regions."""
from __future__ import annotations

import json
import subprocess
import sys

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine

from conftest import write_raster
from geoalps.evaluation import contingency, evaluate_pseudo_labels, pseudo_label_scores
from geoalps.evaluation import grid as grid_module
from geoalps.evaluation.oracle import output_segment_oracle, segment_oracle

CRS = "EPSG:32633"
GRID = Affine(1.0, 0, 500000.0, 0, -1.0, 5000000.0)


def hand_case():
    """4 x 4 truth: class 1 in columns 0-1, class 2 in columns 2-3, (3, 3) nodata (0).
    Region 7 = columns 0-2 (8 px of class 1, 4 of class 2); region 9 = column 3, rows 0-1
    (2 px of class 2); (2, 3) is under no region (a valid class-2 pixel: a miss)."""
    truth = np.array([[1, 1, 2, 2]] * 4, np.uint8)
    truth[3, 3] = 0
    regions = np.zeros((4, 4), np.int32)
    regions[:, :3] = 7
    regions[:2, 3] = 9
    return regions, truth


#: Region 7 -> class 1, region 9 -> class 2. Class 1: hits 8, predicted 12, true 8 -> 8 / 12.
#: Class 2: hits 2, predicted 2, true 7 -> 2 / 7. Pixel accuracy: 10 of 15 valid pixels.
HAND_MIOU, HAND_ACCURACY = (8 / 12 + 2 / 7) / 2, 10 / 15


def test_oracle_of_two_regions_is_the_hand_count():
    regions, truth = hand_case()
    result = segment_oracle(regions, truth, truth_nodata=0)
    assert result["segment_oracle_miou"] == pytest.approx(HAND_MIOU)
    assert result["segment_oracle_pixel_accuracy"] == pytest.approx(HAND_ACCURACY)
    assert result["regions"] == 2


def _m2o(labels, truth, nodata=None):
    return pseudo_label_scores(*contingency(labels, truth, pred_nodata=-1, truth_nodata=nodata))


def test_oracle_is_the_majority_labelling_and_bounds_pixel_accuracy():
    """Every labelling of the same regions (random pseudo-classes per region) scores at most the
    oracle's pixel accuracy (each region counts once, in one class: at most its majority); the
    oracle's mIoU is that of giving each region its majority class."""
    rng = np.random.default_rng(3)
    truth = rng.integers(1, 5, (40, 40)).astype(np.uint8)
    truth[:20, :20] = 1                                    # some purer areas
    truth[25:, 10:30] = 3
    regions = (np.arange(40)[:, None] // 5 * 8 + np.arange(40)[None, :] // 5 + 1).astype(np.int32)
    oracle = segment_oracle(regions, truth, truth_nodata=None)
    majority = np.zeros(regions.max() + 1, np.int64)
    for r in np.unique(regions):
        majority[r] = np.bincount(truth[regions == r]).argmax()
    direct = _m2o(majority[regions], truth)
    assert oracle["segment_oracle_miou"] == pytest.approx(direct["many_to_one_miou"])
    for _ in range(200):
        k = int(rng.integers(1, 10))
        labels = rng.integers(0, k, regions.max() + 1)[regions]
        assert _m2o(labels, truth)["pixel_accuracy"] <= oracle["segment_oracle_pixel_accuracy"] + 1e-12


def test_a_clustering_can_beat_the_oracle_miou_where_a_region_is_mixed():
    """mIoU is not a bound for every clustering: a mixed region (45 c, 40 a, 15 b) goes to c under
    the oracle, but clustered with a small pure region of a it maps to a and lifts a's IoU more
    than c loses. (Pixel accuracy stays bounded.)"""
    c, a, b = 1, 2, 3
    truth = np.concatenate([np.full(1000, c), np.full(45, c), np.full(40, a), np.full(15, b),
                            np.full(10, a), np.full(1000, b)]).astype(np.uint8)[None, :]
    regions = np.concatenate([np.full(1000, 1), np.full(100, 2), np.full(10, 3), np.full(1000, 4)])[None, :]
    oracle = segment_oracle(regions, truth, truth_nodata=None)
    # by hand: c 1045 / 1100, a 10 / 50, b 1000 / 1015
    assert oracle["segment_oracle_miou"] == pytest.approx((1045 / 1100 + 10 / 50 + 1000 / 1015) / 3)
    clustered = np.select([regions == 1, regions == 4], [0, 2], 1)  # regions 2 and 3 together
    scores = _m2o(clustered, truth)
    assert scores["many_to_one_miou"] == pytest.approx((1000 / 1045 + 50 / 110 + 1000 / 1015) / 3)
    assert scores["many_to_one_miou"] > oracle["segment_oracle_miou"]
    assert scores["pixel_accuracy"] <= oracle["segment_oracle_pixel_accuracy"]


def _pixel_box(col0, row0, col1, row1):
    (x0, y0), (x1, y1) = GRID * (col0, row0), GRID * (col1, row1)
    return shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@pytest.fixture
def hand_files(tmp_path):
    """The hand case as a truth raster and a geoalps-like GeoPackage (both regions one pseudo-class)."""
    _, truth = hand_case()
    truth_path = write_raster(tmp_path / "truth.tif", truth, transform=GRID, crs=CRS, nodata=0)
    frame = gpd.GeoDataFrame({"instance_id": [7, 9], "pseudo_class": [0, 0]},
                             geometry=[_pixel_box(0, 0, 3, 4), _pixel_box(3, 0, 4, 2)], crs=CRS)
    gpkg = tmp_path / "out.gpkg"
    pyogrio.write_dataframe(frame, gpkg, layer="masks")
    return gpkg, truth_path


def test_oracle_of_a_geopackage_is_burnt_on_the_truth_grid(hand_files):
    gpkg, truth_path = hand_files
    result = output_segment_oracle(gpkg, truth_path, block_px=3)  # blocks cut both regions
    assert result["segment_oracle_miou"] == pytest.approx(HAND_MIOU)
    assert result["segment_oracle_pixel_accuracy"] == pytest.approx(HAND_ACCURACY)
    assert result["regions"] == 2
    assert "segment_oracle_miou" not in evaluate_pseudo_labels(truth_path, truth_path)  # a raster has no regions


def test_evaluate_takes_the_oracle_in_its_one_pass_over_the_truth(hand_files, monkeypatch):
    """The oracle comes with the other figures, from the same truth blocks: each of the 4 blocks
    of the truth is read once (it was read again, whole, for the oracle)."""
    gpkg, truth_path = hand_files
    reads = []
    real = grid_module.read_pixels
    monkeypatch.setattr(grid_module, "read_pixels", lambda src, window=None, **kw: reads.append(window) or
                        real(src, window, **kw))
    result = evaluate_pseudo_labels(gpkg, truth_path, block_px=2)
    assert len(reads) == 4 and len({(w.col_off, w.row_off) for w in reads}) == 4
    assert result["segment_oracle_miou"] == pytest.approx(HAND_MIOU)
    assert result["segment_oracle_pixel_accuracy"] == pytest.approx(HAND_ACCURACY)
    assert result["regions"] == 2
    assert result == {**result, **output_segment_oracle(gpkg, truth_path, block_px=3)}


def test_evaluate_reports_the_oracle_for_a_geopackage(hand_files, tmp_path):
    gpkg, truth_path = hand_files
    run = subprocess.run([sys.executable, "-m", "geoalps", "evaluate", str(gpkg), str(truth_path), "--json",
                          str(tmp_path / "m.json")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["segment_oracle_miou"] == pytest.approx(HAND_MIOU)
    assert written["regions"] == 2
    # one pseudo-class for both regions: everything predicted maps to class 1 (8 / 14), class 2 is missed
    assert written["many_to_one_miou"] == pytest.approx((8 / 14 + 0) / 2)
    assert f"segment oracle    {HAND_MIOU:.4f}" in run.stdout
