"""geoalps.train.loop: losses fall, multispectral trains, runs resume exactly, init loading, MIM-only."""
from __future__ import annotations

import csv

import pytest
import torch

from geoalps.errors import ModelError, OptionError, OutputError
from geoalps.train import loop
from geoalps.train.checkpoint import load_checkpoint, resume_path
from geoalps.train.loop import TrainOptions, finetune, pretrain

from train.train_scenes import class_pattern, write_labels, write_scene
from train.train_scenes import _train_test_environment, scene, trained  # noqa: F401 - fixtures used by name


def _options(**kw):
    base = dict(epochs=2, steps_per_epoch=6, batch_size=4, lr=2e-3, quiet=True)
    base.update(kw)
    return TrainOptions(**base)


def test_loss_falls_on_a_six_band_scene(tmp_path):
    classes = class_pattern(128, 160, n_classes=3)
    image = write_scene(tmp_path / "s.tif", classes, bands=6)
    labels = write_labels(tmp_path / "s.labels.tif", classes)
    history = pretrain([image], [labels], tmp_path / "p.pt", size="tiny", options=_options(epochs=3, steps_per_epoch=8))
    losses = [row["train_loss"] for row in history]
    assert losses[-1] < 0.8 * losses[0], losses
    ckpt = load_checkpoint(tmp_path / "p.pt")
    assert ckpt["arch"]["in_chans"] == 6 and ckpt["bands"]["count"] == 6
    assert len(ckpt["norm"]["mean"]) == 6
    assert ckpt["classes"]["names"] == ["pseudo 0", "pseudo 1", "pseudo 2"]
    assert ckpt["classes"]["colours"][1] == [30, 200, 30]  # from the label raster's colour table
    assert "resume" not in ckpt and not resume_path(tmp_path / "p.pt").exists()
    with open(tmp_path / "p.metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and float(rows[-1]["val_miou"]) > 0


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, scene, monkeypatch):
    image, labels, _ = scene
    finetune([image], [labels], tmp_path / "straight.pt", size="tiny", options=_options(epochs=2, steps_per_epoch=3))

    real_validate = loop._validate
    calls = {"n": 0}

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(loop, "_validate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        finetune([image], [labels], tmp_path / "m.pt", size="tiny", options=_options(epochs=2, steps_per_epoch=3))
    assert resume_path(tmp_path / "m.pt").exists() and not (tmp_path / "m.pt").exists()
    monkeypatch.setattr(loop, "_validate", real_validate)
    history = finetune([image], [labels], tmp_path / "m.pt", size="tiny", options=_options(epochs=2, steps_per_epoch=3, resume=True))
    assert [row["epoch"] for row in history] == [1, 2]
    straight, resumed = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "m.pt")
    for key, value in straight["model"].items():
        assert torch.allclose(value, resumed["model"][key], atol=1e-6), key


def test_finetune_from_init_and_refusals(tmp_path, trained):
    model, image, labels, classes, pretrained = trained
    ckpt = load_checkpoint(model)
    assert ckpt["kind"] == "train" and ckpt["training"]["init"] == str(pretrained)
    assert ckpt["classes"]["names"] == ["red", "green", "blue"]
    assert ckpt["training"]["history"][-1]["val_miou"] > 0.5
    with pytest.raises(OutputError, match="exists"):
        finetune([image], [labels], model, init=pretrained, options=_options())
    five = write_scene(tmp_path / "five.tif", classes, bands=5)
    with pytest.raises(ModelError, match="4 bands"):
        finetune([five], [labels], tmp_path / "x.pt", init=pretrained, options=_options())


def test_few_label_cells_are_recorded(tmp_path, scene):
    image, labels, _ = scene
    finetune([image], [labels], tmp_path / "few.pt", size="tiny", label_fraction=0.15, options=_options(epochs=1, steps_per_epoch=2))
    regions = load_checkpoint(tmp_path / "few.pt")["training"]["regions"]
    (scene_index, col, row, width, height), = regions["train"]  # 15 % of 173 x 150 px rounds to one 64 px cell
    assert (scene_index, width, height) == (0, 64, 64) and col % 64 == 0 and row % 64 == 0


def test_class_names_come_from_the_label_raster_tag(tmp_path, scene):
    import rasterio

    image, labels, _ = scene
    with rasterio.open(labels, "r+") as dst:
        dst.update_tags(CLASS_NAMES="ground,building,road")
    finetune([image], [labels], tmp_path / "n.pt", size="tiny", options=_options(epochs=1, steps_per_epoch=1))
    assert load_checkpoint(tmp_path / "n.pt")["classes"]["names"] == ["ground", "building", "road"]


def test_mim_only_pretraining_then_fine_tuning(tmp_path, scene):
    image, labels, _ = scene
    history = pretrain([image], None, tmp_path / "mim.pt", objective="mim", size="tiny", options=_options(epochs=1, steps_per_epoch=3))
    assert history[0]["train_mim_loss"] > 0 and history[0]["val_mim_loss"] > 0
    ckpt = load_checkpoint(tmp_path / "mim.pt")
    assert ckpt["arch"]["num_classes"] == 0 and "mim_head" in ckpt
    finetune([image], [labels], tmp_path / "ft.pt", init=tmp_path / "mim.pt", options=_options(epochs=1, steps_per_epoch=2))
    assert load_checkpoint(tmp_path / "ft.pt")["arch"]["num_classes"] == 3


def test_pseudo_objective_needs_labels(tmp_path, scene):
    with pytest.raises(OptionError, match="needs --labels"):
        pretrain([scene[0]], None, tmp_path / "p.pt", objective="both", size="tiny", options=_options())
