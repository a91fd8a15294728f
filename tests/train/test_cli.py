"""The pretrain -> train -> predict -> evaluate chain through the ``geoalps`` command (click runner)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from geoalps.cli import main
from geoalps.errors import InputError, OutputError

from train.train_scenes import (TRAIN_TRANSFORM, class_pattern, write_labels, write_scene,
                                write_tail_truncated_labels)
from train.train_scenes import _train_test_environment  # noqa: F401 - fixtures used by name

TINY = ["--model", "tiny", "--epochs", "1", "--steps-per-epoch", "4", "--batch-size", "4", "--lr", "2e-3", "-q"]


def test_whole_chain_with_two_scenes(tmp_path):
    runner = CliRunner()
    a_classes, b_classes = class_pattern(128, 140, seed=2), class_pattern(128, 140, seed=3)
    b_transform = TRAIN_TRANSFORM * TRAIN_TRANSFORM.translation(0, 400)  # a second, disjoint scene
    a, b = write_scene(tmp_path / "a.tif", a_classes), write_scene(tmp_path / "b.tif", b_classes, transform=b_transform)
    al = write_labels(tmp_path / "a.labels.tif", a_classes)
    bl = write_labels(tmp_path / "b.labels.tif", b_classes, transform=b_transform)
    pre = tmp_path / "pre.pt"

    result = runner.invoke(main, ["pretrain", "--images", str(a), str(b), "--labels", str(al), str(bl), "-o", str(pre),
                                  "--objective", "both", *TINY])
    assert result.exit_code == 0, result.output
    model = tmp_path / "model.pt"
    result = runner.invoke(main, ["train", "--images", str(a), "--labels", str(al), "--init", str(pre), "-o", str(model),
                                  "--label-fraction", "0.3", "--class-names", "x,y,z", *TINY[2:]])
    assert result.exit_code == 0, result.output

    pred = tmp_path / "a.pred.tif"
    result = runner.invoke(main, ["predict", str(model), str(a), "-o", str(pred), "--polygons", str(tmp_path / "a.gpkg"),
                                  "--progress-lines"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("geoalps-progress: ")]
    assert lines and lines[-1].split()[1] == "100.0"
    assert all(0 <= float(line.split()[1]) <= 100 for line in lines)
    with rasterio.open(pred) as p:
        assert p.transform == TRAIN_TRANSFORM and (p.width, p.height) == (140, 128)

    result = runner.invoke(main, ["predict", str(model), str(a), "-o", str(pred)])
    assert result.exit_code == OutputError.exit_code and "exists" in result.stderr and "--overwrite" in result.stderr

    result = runner.invoke(main, ["evaluate", str(pred), str(al), "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    assert set(json.loads((tmp_path / "m.json").read_text())["identity"]) >= {"miou", "per_class", "overall_accuracy"}


def test_label_on_another_grid_is_a_one_line_error(tmp_path):
    classes = class_pattern(96, 96)
    image = write_scene(tmp_path / "a.tif", classes)
    shifted = write_labels(tmp_path / "a.labels.tif", classes, transform=TRAIN_TRANSFORM * TRAIN_TRANSFORM.translation(3, 0))
    result = CliRunner().invoke(main, ["pretrain", "--images", str(image), "--labels", str(shifted), "-o",
                                       str(tmp_path / "p.pt"), *TINY])
    assert result.exit_code == InputError.exit_code
    assert result.stderr.count("\n") == 1 and "not on the grid" in result.stderr and "a.labels.tif" in result.stderr
    assert not (tmp_path / "p.pt").exists()


@pytest.mark.parametrize("cut", ["tail", "half"])
def test_truncated_label_raster_is_a_one_line_error_naming_it(tmp_path, cut):
    """A label raster cut short: "tail" keeps its header and overviews (so it opens and its
    decimated read works) and loses full-resolution blocks, which the class scan reads through
    read_pixels; "half" is a GTiff cut in half, which loses its header (written last) and fails
    to open."""
    classes = class_pattern(2100, 2100, block=40)
    image = write_scene(tmp_path / "big.tif", classes, bands=2)
    labels = tmp_path / "big.labels.tif"
    if cut == "tail":
        write_tail_truncated_labels(labels, classes)
        expected = "cannot read pixels at col 0, row 1024"
    else:
        whole = write_labels(tmp_path / "whole.tif", classes)
        labels.write_bytes(Path(whole).read_bytes()[: whole.stat().st_size // 2])
        expected = "cannot open as a raster"
    result = CliRunner().invoke(main, ["train", "--images", str(image), "--labels", str(labels), "-o",
                                       str(tmp_path / "m.pt"), *TINY])
    assert result.exit_code == InputError.exit_code, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"geoalps: error: {labels}: ") and expected in result.stderr
    assert not (tmp_path / "m.pt").exists()


def test_cli_defaults_are_the_train_options_defaults():
    # _train_options builds TrainOptions from its fields: every budget option lands in one field.
    from dataclasses import fields

    from geoalps.cli.train import _train_options, pretrain_command, train_command
    from geoalps.train.loop import TrainOptions

    for command in (pretrain_command, train_command):
        required = ["--images", "a.tif", "--labels", "a.labels.tif", "-o", "m.pt"]
        kw = command.make_context(command.name, list(required)).params
        assert _train_options(dict(kw)) == TrainOptions()
        kw = command.make_context(command.name, required + ["--epochs", "3", "--no-augment", "--threads", "1"]).params
        options = _train_options(kw)
        assert (options.epochs, options.augment, options.threads) == (3, False, 1)
        assert not set(kw) & {f.name for f in fields(TrainOptions)}  # consumed, not passed on twice
