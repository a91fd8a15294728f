"""End to end: "Pre-train" and "Train segmentation model" run the real ``geoalps pretrain|train``
with the arguments built from the declared records (a tiny model, one step: the plumbing only)."""
from __future__ import annotations

import csv

import processing
import pytest

from conftest import REPO, require_real_cli
from helpers import RecordingFeedback

SCENE = REPO / "sample_data" / "scene_rgb_u8.tif"
TRUTH = REPO / "sample_data" / "scene_rgb_u8.gt.tif"


@pytest.mark.slow  # about a minute on 2 busy cores
def test_pretrain_then_train_with_the_real_cli(qgis_app, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CLI", require_real_cli())
    if not (SCENE.is_file() and TRUTH.is_file()):
        pytest.skip(f"{SCENE} or its ground truth missing")
    budget = {"MODEL_SIZE": 3, "EPOCHS": 1, "STEPS_PER_EPOCH": 1, "BATCH_SIZE": 1, "THREADS": 1}
    pretrained = str(tmp_path / "pre.pt")
    processing.run("geoalps:pretrain", {"IMAGES": [str(SCENE)], "LABELS": [], "OBJECTIVE": 1, "OUTPUT": pretrained,
                                        **budget}, feedback=RecordingFeedback())
    model = str(tmp_path / "model.pt")
    feedback = RecordingFeedback()
    results = processing.run("geoalps:train", {"IMAGES": [str(SCENE)], "LABELS": [str(TRUTH)], "INIT": pretrained,
                                               "OUTPUT": model, "AUGMENT": False, **budget}, feedback=feedback)
    assert results == {"OUTPUT": model}
    with open(tmp_path / "model.metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1"] and float(rows[0]["train_loss"]) > 0
    assert feedback.progress and max(feedback.progress) == 100.0
