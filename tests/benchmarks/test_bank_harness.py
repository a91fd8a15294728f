"""benchmarks/label_quality/bank.py on one small bank scene: its figures are geoalps evaluate's, its
label options reach geoalps.label, and its table prints issue 25's targets."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import REPO
from geoalps import label
from geoalps.evaluation import evaluate_pseudo_labels
from geoalps.evaluation.oracle import output_segment_oracle

SCENE = "s07_small_s2_20m"  # 256 x 256, 10 bands, float32, selection half


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_bank_rows_are_evaluates_figures(tmp_path, capsys):
    make = _load("make_bank", REPO / "benchmarks/scene_bank/make_bank.py")
    harness = _load("bank_harness", REPO / "benchmarks/label_quality/bank.py")
    bank = tmp_path / "bank"
    make.write_bank(bank, names=[SCENE])
    rows_path = tmp_path / "rows.jsonl"
    args = ["--bank", str(bank), "--seeds", "1", "--mult", "1", "--no-otb", "--json", str(rows_path),
            "--tag", "t", "--label-option", "classical_scale=80"]
    assert harness.main(args) == 0
    (row,) = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert (row["scene"], row["K"], row["seed"], row["half"], row["real"]) == (SCENE, 4, 1, "selection", False)
    assert row["label_options"] == {"classical_scale": 80} and row["commit"] and row["bank"]

    # the same run by hand, scored by geoalps evaluate's functions
    image, truth = bank / f"{SCENE}.tif", bank / f"{SCENE}.gt.tif"
    label([str(image)], tmp_path / "out.gpkg", raster_out=tmp_path / "out.tif", classes=4, seed=1, workers=1,
          quiet=True, classical_scale=80)
    scores = evaluate_pseudo_labels(tmp_path / "out.tif", truth)
    oracle = output_segment_oracle(tmp_path / "out.gpkg", truth)
    assert row["m2o"] == pytest.approx(scores["many_to_one_miou"])
    assert row["hung"] == pytest.approx(scores["hungarian_miou"])
    assert row["oracle_m2o"] == pytest.approx(oracle["segment_oracle_miou"])
    assert row["regions"] == oracle["regions"]
    # the default scale gives other regions: the option reached label()
    label([str(image)], tmp_path / "d.gpkg", classes=4, seed=1, workers=1, quiet=True)
    assert output_segment_oracle(tmp_path / "d.gpkg", truth)["regions"] != row["regions"]
    # region k-means and the pixel baseline are scores of a labelling
    for key in ("region_km_m2o", "region_kmw_m2o", "pixel_m2o", "pixel_hung"):
        assert 0 < row[key] <= 1
    assert row["oracle_acc"] >= scores["pixel_accuracy"] - 1e-12  # the oracle bounds accuracy

    # the pixel baseline is cached for later runs, and the table prints the targets
    assert list((bank / "pixel_cache").iterdir())
    capsys.readouterr()
    assert harness.main(["--table", "t", "--json", str(rows_path)]) == 0
    printed = capsys.readouterr().out
    assert f"| {SCENE} | selection | 4 | 1 |" in printed
    assert "Targets, synthetic selection half (1 scenes):" in printed
    assert "oracle ceiling >= 0.9" in printed
