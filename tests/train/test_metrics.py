"""geoalps.train.metrics: mIoU, per-class IoU and accuracy on hand-made rasters, computed by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine

from geoalps.errors import InputError, OutputError
from geoalps.train.metrics import confusion_matrix, evaluate, scores

from train.train_scenes import _train_test_environment  # noqa: F401 - fixtures used by name

N = 255
TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, N, N]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 0, 3, 3]], dtype=np.uint8)
# Scored pixels: the 10 where truth is not nodata. By hand:
#   class 0: TP 3, truth 4, predicted 5 (3 + one on truth 1 + one on truth 2) -> union 6, IoU 1/2
#   class 1: TP 3, truth 4, predicted 4 (3 + one on truth 0)                 -> union 5, IoU 3/5
#   class 2: TP 1, truth 2, predicted 1                                      -> union 2, IoU 1/2
#   class 3: predicted only on truth nodata -> empty union, does not count
#   mIoU = (1/2 + 3/5 + 1/2) / 3 = 8/15; accuracy = 7/10
EXPECTED_MIOU = 8 / 15


def _write(path, array, nodata=255, description=None):
    with rasterio.open(path, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                       dtype=array.dtype.name, crs="EPSG:32633", transform=Affine(2, 0, 1000, 0, -2, 2000),
                       nodata=nodata) as dst:
        dst.write(array, 1)
        if description:
            dst.set_band_description(1, description)
    return path


def _write_prediction(path, array):
    """A class raster as ``geoalps predict`` writes it: band 1 described ``class`` (ids are the truth's)."""
    return _write(path, array, description="class")


def test_evaluate_matches_hand_computed_scores(tmp_path):
    result = evaluate(_write(tmp_path / "p.tif", PRED), _write(tmp_path / "t.tif", TRUTH))
    assert result["miou"] == pytest.approx(EXPECTED_MIOU)
    assert result["per_class_iou"] == pytest.approx({"0": 0.5, "1": 0.6, "2": 0.5})
    assert result["overall_accuracy"] == pytest.approx(0.7)
    assert result["pixels_scored"] == 10


def test_prediction_nodata_on_valid_truth_is_a_miss(tmp_path):
    pred = PRED.copy()
    pred[0, 2] = 255  # was a correct class-1 pixel
    result = evaluate(_write(tmp_path / "p.tif", pred), _write(tmp_path / "t.tif", TRUTH))
    # class 1: TP 2, truth 4, predicted 3 -> union 5, IoU 2/5; accuracy 6/10
    assert result["per_class_iou"]["1"] == pytest.approx(0.4)
    assert result["overall_accuracy"] == pytest.approx(0.6)
    assert result["miou"] == pytest.approx((0.5 + 0.4 + 0.5) / 3)


def test_classes_absent_from_both_do_not_count():
    confusion = confusion_matrix(PRED[TRUTH != N], TRUTH[TRUTH != N], n_classes=6)
    result = scores(confusion)
    assert set(result["per_class_iou"]) == {"0", "1", "2"}  # 3 was only predicted on nodata; 4, 5 nowhere
    assert result["miou"] == pytest.approx(EXPECTED_MIOU)


def test_different_sizes_are_refused(tmp_path):
    with pytest.raises(InputError, match="one grid"):
        evaluate(_write(tmp_path / "p.tif", PRED[:, :3].copy()), _write(tmp_path / "t.tif", TRUTH))


def _prediction_on_grid_of(path, out):
    with rasterio.open(path) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, nodata=255)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.zeros((profile["height"], profile["width"]), np.uint8), 1)
    return out


def test_a_truth_with_undecodable_blocks_is_a_one_line_error_naming_it(tmp_path, realdata):
    """GDAL hands back pixels for a JPEG block it cannot decode; evaluate reads through
    read_pixels, which refuses them, instead of scoring made-up pixels."""
    truth = realdata / "edge_cases" / "corrupt_jpeg.tif"
    with pytest.raises(InputError) as caught:
        evaluate(_prediction_on_grid_of(truth, tmp_path / "p.tif"), truth)
    message = str(caught.value)
    assert message.startswith(f"{truth}: cannot read pixels at col 0, row ") and "\n" not in message


def test_a_truncated_truth_is_a_one_line_error_naming_it(tmp_path):
    whole = _write(tmp_path / "whole.tif", np.tile(TRUTH, (200, 150)))
    truth = tmp_path / "t.tif"
    truth.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError) as caught:
        evaluate(_prediction_on_grid_of(whole, tmp_path / "p.tif"), truth)
    assert str(caught.value).startswith(f"{truth}: cannot read pixels at col 0, row ")
    with pytest.raises(InputError, match="missing.tif: file not found"):
        evaluate(tmp_path / "p.tif", tmp_path / "missing.tif")


def test_cli_evaluate_writes_the_contract_keys(tmp_path):
    from click.testing import CliRunner

    from geoalps.cli import main

    pred, truth = _write_prediction(tmp_path / "p.tif", PRED), _write(tmp_path / "t.tif", TRUTH)
    result = CliRunner().invoke(main, ["evaluate", str(pred), str(truth), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output
    saved = json.loads((tmp_path / "m.json").read_text())["identity"]  # scored as predicted (--mapping identity)
    assert saved["miou"] == pytest.approx(EXPECTED_MIOU)
    assert {row["class"]: row["iou"] for row in saved["per_class"]}[1] == pytest.approx(0.6)
    assert saved["overall_accuracy"] == pytest.approx(0.7)


def test_cli_evaluate_refuses_to_overwrite_json(tmp_path):
    from click.testing import CliRunner

    from geoalps.cli import main

    pred, truth = _write_prediction(tmp_path / "p.tif", PRED), _write(tmp_path / "t.tif", TRUTH)
    (tmp_path / "m.json").write_text("{}")
    result = CliRunner().invoke(main, ["evaluate", str(pred), str(truth), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == OutputError.exit_code and "--overwrite" in result.stderr
    result = CliRunner().invoke(main, ["evaluate", str(pred), str(truth), "--json", str(tmp_path / "m.json"), "--overwrite"])
    assert result.exit_code == 0 and json.loads((tmp_path / "m.json").read_text())["identity"]["overall_accuracy"] == pytest.approx(0.7)
