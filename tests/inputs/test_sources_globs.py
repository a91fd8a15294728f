"""Glob patterns as scenes: a local path that does not exist and holds glob characters stands for
the files it matches, sorted; one matching nothing is a one-line error naming it."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import write_raster
from geoalps.errors import InputError
from geoalps.inputs.sources import expand_glob, expand_scene_paths, scene_sources
from stac_items import write_item


@pytest.fixture
def folder(tmp_path):
    pixels = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(3, 8, 8)
    for name in ("c.tif", "a.tif", "b.tif", "a.png", "notes.txt"):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("x")
        else:
            write_raster(tmp_path / name, pixels)
    (tmp_path / "sub").mkdir()
    write_raster(tmp_path / "sub" / "z.tif", pixels)
    return tmp_path


def test_a_pattern_stands_for_its_matches_sorted(folder):
    assert expand_scene_paths([folder / "*.tif"]) == [str(folder / n) for n in ("a.tif", "b.tif", "c.tif")]
    assert expand_scene_paths([folder / "[ab].*"]) == [str(folder / n) for n in ("a.png", "a.tif", "b.tif")]
    assert expand_scene_paths([folder / "**" / "z.tif"]) == [str(folder / "sub" / "z.tif")]
    # a matched folder stands for its image files, as a folder given does
    assert expand_scene_paths([folder / "su?"]) == [str(folder / "sub" / "z.tif")]
    # patterns and plain paths keep the order given
    assert expand_scene_paths([folder / "sub" / "z.tif", folder / "?.tif"])[:2] == [str(folder / "sub" / "z.tif"),
                                                                                 str(folder / "a.tif")]


def test_a_pattern_matching_nothing_is_an_error_naming_it(folder):
    with pytest.raises(InputError, match=r"\*\.jp2: no file matches this pattern$"):
        expand_scene_paths([folder / "a.tif", folder / "*.jp2"])


def test_an_existing_file_with_glob_characters_and_urls_are_taken_as_given(folder):
    odd = folder / "scene[1].tif"
    odd.write_bytes((folder / "a.tif").read_bytes())
    assert expand_glob(odd) == [str(odd)]  # it exists: not a pattern (which would match nothing)
    url = "https://example.org/scene*.tif?sig=a?b"
    assert expand_scene_paths([url]) == [url]
    assert expand_glob(folder / "missing.tif") == [str(folder / "missing.tif")]  # open_scene says "not found"


def test_a_pattern_and_a_file_it_matches_are_one_scene_given_twice(folder):
    with pytest.raises(InputError, match="a.tif: scene given twice"):
        scene_sources([folder / "a.tif", folder / "*.tif"])


def test_a_pattern_of_stac_items_gives_one_scene_per_item(tmp_path):
    data = np.full((4, 8, 8), 500, dtype=np.uint16)
    for item_id in ("S2X_B", "S2X_A"):
        write_item(tmp_path, data, item_id=item_id)
    sources = scene_sources([tmp_path / "S2X_*.json"])
    assert [s.name for s in sources] == ["S2X_A", "S2X_B"]
    assert [s.shown for s in sources] == [str(tmp_path / "S2X_A.json"), str(tmp_path / "S2X_B.json")]
