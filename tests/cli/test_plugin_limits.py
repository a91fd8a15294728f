"""The QGIS plugin's parameter choices and limits are the library's (the plugin cannot import
geoalps inside QGIS, so this test holds its stdlib-only limits module against geoalps.options)."""
from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO
from geoalps.errors import OptionError, ResumeError
from geoalps.options import (CLASSES_MAX, ENGINE_CHOICES, MODEL_TYPE_CHOICES, TILE_SIZE_MIN_PX, LabelOptions,
                             check_tiling)


def _plugin_limits():
    path = REPO / "plugins/qgis/geoalps_processing/limits.py"
    spec = importlib.util.spec_from_file_location("plugin_limits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_choices_and_defaults_are_the_librarys():
    plugin, defaults = _plugin_limits(), LabelOptions()
    assert plugin.ENGINES == ENGINE_CHOICES
    assert plugin.MODEL_TYPES == MODEL_TYPE_CHOICES
    assert plugin.CLASSES_MAX == CLASSES_MAX and 1 <= plugin.CLASSES_MIN <= plugin.CLASSES_DEFAULT
    assert plugin.CLASSES_DEFAULT == defaults.classes
    assert plugin.TILE_SIZE_MIN_PX == TILE_SIZE_MIN_PX
    assert (plugin.TILE_SIZE_DEFAULT_PX, plugin.OVERLAP_DEFAULT_PX) == (defaults.tile_size, defaults.overlap)
    assert plugin.SEED_DEFAULT == defaults.seed
    assert plugin.CLASSICAL_SCALE_DEFAULT == defaults.classical_scale
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
