"""The QGIS plugin's parameter choices and limits are the library's (the plugin cannot import
geoalps inside QGIS, so this test holds its stdlib-only limits module against geoalps.options)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import REPO
from geoalps.errors import OptionError, ResumeError
from geoalps.options import (CLASSES_MAX, ENGINE_CHOICES, MODEL_TYPE_CHOICES, TILE_SIZE_MIN_PX, LabelOptions,
                             check_tiling)


def _plugin_limits():
    path = REPO / "plugins/qgis/geoalps_processing/limits.py"
    spec = importlib.util.spec_from_file_location("plugin_limits", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_choices_and_defaults_are_the_librarys():
    plugin, defaults = _plugin_limits(), LabelOptions()
    assert plugin.ENGINES == ENGINE_CHOICES
    assert plugin.MODEL_TYPES == MODEL_TYPE_CHOICES
    assert plugin.CLASSES_MAX == CLASSES_MAX and 1 <= plugin.CLASSES_MIN <= plugin.CLASSES_DEFAULT
    assert plugin.CLASSES_DEFAULT == defaults.classes
    assert plugin.TILE_SIZE_MIN_PX == TILE_SIZE_MIN_PX
    assert (plugin.TILE_SIZE_DEFAULT_PX, plugin.OVERLAP_DEFAULT_PX) == (defaults.tile_size_px, defaults.overlap_px)
    assert plugin.SEED_DEFAULT == defaults.seed
    assert plugin.CLASSICAL_SCALE_DEFAULT == defaults.classical_scale
    assert plugin.CLASSICAL_SPLIT_DEFAULT == defaults.classical_split
    LabelOptions(classical_scale=plugin.CLASSICAL_SCALE_MIN).validated()  # the plugin's smallest is valid
    assert plugin.RESUME_REFUSED_EXIT_CODE == ResumeError.exit_code  # the plugin starts over on this code


@pytest.mark.parametrize("tile, overlap", [(64, 0), (64, 32), (64, 33), (63, 0), (1024, 512), (1024, 513), (512, -1)])
def test_tile_overlap_rule_agrees(tile, overlap):
    plugin_says_ok = _plugin_limits().overlap_problem(tile, overlap) is None
    try:
        check_tiling(tile, overlap)
        library_says_ok = True
    except OptionError:
        library_says_ok = False
    assert plugin_says_ok == library_says_ok


@pytest.mark.parametrize("names, count", [("blue,green,red,nir", 4), (" Blue, GREEN ,red", 3), ("blue,green", 3),
                                          ("blue,green,infrared", 3), ("", 1), ("pan", 1)])
def test_band_names_rule_agrees(tmp_path, names, count):
    from geoalps.inputs.bands import BAND_NAME_VOCABULARY, parse_band_names

    plugin = _plugin_limits()
    assert plugin.BAND_NAMES == BAND_NAME_VOCABULARY
    try:
        parse_band_names(names, count, "scene.tif")
        library_says_ok = True
    except OptionError:
        library_says_ok = False
    assert (plugin.band_names_problem(names, count) is None) == library_says_ok


def _click_option(command, flag):
    """The click option of ``command`` answering to ``flag`` (as its primary or secondary name)."""
    for param in command.params:
        if flag in (*param.opts, *param.secondary_opts):
            return param
    raise AssertionError(f"{command.name} has no option {flag}")


def _training_records(plugin):
    return {"pretrain": plugin.TRAIN_MODEL_OPTIONS + plugin.PRETRAIN_OPTIONS + plugin.TRAIN_OPTIONS,
            "train": plugin.TRAIN_MODEL_OPTIONS + plugin.FINETUNE_OPTIONS + plugin.TRAIN_OPTIONS}


def test_training_parameters_are_train_options_and_the_cli():
    from dataclasses import fields

    import click

    from geoalps.cli import main
    from geoalps.train.options import MODEL_SIZE_CHOICES, OBJECTIVE_CHOICES, PRECISION_CHOICES, TrainOptions

    plugin, defaults = _plugin_limits(), TrainOptions()
    assert (plugin.TRAIN_MODEL_SIZES, plugin.TRAIN_OBJECTIVES, plugin.TRAIN_PRECISIONS) == (
        MODEL_SIZE_CHOICES, OBJECTIVE_CHOICES, PRECISION_CHOICES)
    exposed = [spec.field for spec in plugin.TRAIN_OPTIONS]
    # every TrainOptions field is a plugin parameter or listed (with a reason) as left to geoalps
    assert sorted(exposed + list(plugin.TRAIN_OPTIONS_NOT_EXPOSED)) == sorted(f.name for f in fields(TrainOptions))
    for spec in plugin.TRAIN_OPTIONS:
        library = getattr(defaults, spec.field)
        assert spec.default == (spec.unset if library is None else library), spec.name
    for command_name, specs in _training_records(plugin).items():
        command = main.commands[command_name]
        assert len({s.name for s in specs}) == len(specs)
        for spec in specs:
            option = _click_option(command, spec.flag)
            if spec.kind == "bool":
                # the flag changes the default (its parsing: test_training_arguments_parse_...)
                assert option.is_flag and spec.default is (True if spec.negate else False), spec.name
                continue
            click_default = option.default
            assert (spec.default == click_default) or (click_default is None and spec.default == spec.unset), spec.name
            if spec.choices:
                assert tuple(option.type.choices) == spec.choices, spec.name
            if isinstance(option.type, (click.IntRange, click.FloatRange)) and spec.minimum != spec.unset:
                # the plugin's smallest value is one the CLI accepts ("unset" values are never
                # passed; tile sizes between are caught by train_problem, tested below)
                low, high = option.type.min, option.type.max
                assert low is None or (spec.minimum > low if option.type.min_open else spec.minimum >= low), spec.name
                if high is not None:
                    assert spec.maximum is not None, spec.name
                    assert spec.maximum < high if option.type.max_open else spec.maximum <= high, spec.name


@pytest.mark.parametrize("command_name", ["pretrain", "train"])
def test_training_arguments_parse_to_the_options_they_say(command_name):
    from geoalps.cli import main
    from geoalps.cli.train import _train_options
    from geoalps.train.options import TrainOptions

    plugin = _plugin_limits()
    specs = _training_records(plugin)[command_name]
    command = main.commands[command_name]
    base = ["--images", "a.tif", "--labels", "a.labels.tif", "-o", "m.pt"]

    def options_of(values):
        ctx = command.make_context(command_name, base + plugin.train_arguments(specs, values))
        return _train_options(dict(ctx.params)), ctx.params

    options, params = options_of({})  # every parameter at its declared default: the library's defaults
    assert options == TrainOptions()
    assert params["size"] == "swin_t" and params["tile_size_px"] is None
    changed = {"EPOCHS": 3, "LR": 0.001, "PRECISION": "bf16", "AUGMENT": False, "RESUME": True, "THREADS": 2,
               "TILE_SIZE": 128, "MODEL_SIZE": "tiny", "DEVICE": "cpu"}
    options, params = options_of(changed)
    assert options == TrainOptions(epochs=3, lr=0.001, precision="bf16", augment=False, resume=True, threads=2,
                                   device="cpu")
    assert params["size"] == "tiny" and params["tile_size_px"] == 128


@pytest.mark.parametrize("tile", [0, 32, 63, 64, 96, 100, 224])
def test_training_tile_rule_agrees(tile):
    from geoalps.train.models import make_arch

    plugin = _plugin_limits()
    try:
        make_arch("tiny", 4, 3, tile or None)
        library_says_ok = True
    except OptionError:
        library_says_ok = False
    assert (plugin.train_problem({"TILE_SIZE": tile}) is None) == library_says_ok


def test_vector_suffixes_are_the_librarys():
    from geoalps.outputs import formats

    library = formats.VECTOR_SUFFIXES
    # the plugin hands a layer over as is only in a format geoalps reads as vector data
    assert set(_plugin_limits().VECTOR_SUFFIXES) <= set(library)
