"""geoalps.train.options: one validated TrainOptions record; the CLI and the models are built from its choices."""
from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from geoalps.cli import main
from geoalps.errors import OptionError
from geoalps.train.options import MODEL_SIZE_CHOICES, OBJECTIVE_CHOICES, PRECISION_CHOICES, TrainOptions


def test_defaults_are_valid_and_the_record_is_frozen():
    options = TrainOptions()
    assert options.validated() is options
    with pytest.raises(AttributeError):
        options.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize("change, option", [
    (dict(epochs=0), "--epochs"), (dict(steps_per_epoch=-1), "--steps-per-epoch"), (dict(batch_size=1.5), "--batch-size"),
    (dict(lr=0.0), "--lr"), (dict(lr=math.nan), "--lr"), (dict(weight_decay=-0.1), "--weight-decay"),
    (dict(val_fraction=1.0), "--val-fraction"), (dict(seed=2**32), "--seed"), (dict(precision="16"), "--precision"),
    (dict(workers=-1), "--workers"), (dict(threads=0), "--threads"), (dict(timeout_s=0), "--timeout"),
])
def test_each_invalid_value_is_a_one_line_error_naming_its_option(change, option):
    with pytest.raises(OptionError) as caught:
        TrainOptions(**change).validated()
    assert str(caught.value).startswith(option) and "\n" not in str(caught.value)


def test_library_entry_points_validate(tmp_path):
    from geoalps.train.loop import pretrain

    with pytest.raises(OptionError, match="--epochs"):
        pretrain(["missing.tif"], ["missing.labels.tif"], tmp_path / "m.pt", options=TrainOptions(epochs=0))
    with pytest.raises(OptionError, match="--model 'swin_x'"):
        pretrain(["missing.tif"], ["missing.labels.tif"], tmp_path / "m.pt", size="swin_x")
    with pytest.raises(OptionError, match="--objective 'simclr'"):
        pretrain(["missing.tif"], None, tmp_path / "m.pt", objective="simclr")


def test_choices_are_declared_once():
    from geoalps.cli.train import pretrain_command
    from geoalps.train.models import MODEL_SIZES

    assert tuple(MODEL_SIZES) == MODEL_SIZE_CHOICES
    params = {p.name: p for p in pretrain_command.params}
    assert tuple(params["size"].type.choices) == MODEL_SIZE_CHOICES
    assert tuple(params["precision"].type.choices) == PRECISION_CHOICES
    assert tuple(params["objective"].type.choices) == OBJECTIVE_CHOICES
    assert params["timeout_s"].default == TrainOptions().timeout_s


def test_help_states_per_process_and_global_batch_and_the_lr_rule():
    for command in ("pretrain", "train"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert "torchrun --nproc-per-node N -m geoalps" in text
        assert "per process" in text and "N x BATCH_SIZE tiles (the global batch)" in text
        assert "--lr is applied as given, never scaled with N" in text
