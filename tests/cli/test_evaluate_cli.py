"""`geoalps evaluate` and `geoalps classes` as users run them: figures printed and written, the
same numbers as the library, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO
from geoalps import label
from geoalps.errors import InputError, OutputError
from geoalps.evaluation import evaluate_pseudo_labels

SCENE = REPO / "sample_data/scene_rgb_u8.tif"
TRUTH = REPO / "sample_data/scene_rgb_u8.gt.tif"


def run(*args):
    return subprocess.run([sys.executable, "-m", "geoalps", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    label(SCENE, folder / "out.gpkg", raster_out=folder / "out.tif", engine="classical", classes=6, quiet=True)
    return folder


def test_evaluate_prints_and_writes_the_librarys_figures(labelled):
    result = run("evaluate", labelled / "out.tif", TRUTH, "--json", labelled / "m.json",
                 "--figure", labelled / "cm.png")
    assert result.returncode == 0, result.stderr
    written = json.loads((labelled / "m.json").read_text())
    expected = evaluate_pseudo_labels(labelled / "out.tif", TRUTH)
    for key in ("many_to_one_miou", "pixel_accuracy", "hungarian_miou", "purity", "nmi"):
        assert written[key] == pytest.approx(expected[key])
        assert f"{expected[key]:.4f}" in result.stdout
    assert 0 < written["hungarian_miou"] <= written["many_to_one_miou"] + 1e-9 or written["n_pseudo_classes"] < 5
    assert "miou" not in written, "a label raster's ids are pseudo-classes, not the truth's"
    assert Image.open(labelled / "cm.png").size[0] > 100


def test_geopackage_and_raster_predictions_score_alike(labelled):
    from_raster = evaluate_pseudo_labels(labelled / "out.tif", TRUTH)
    from_layer = evaluate_pseudo_labels(labelled / "out.gpkg", TRUTH)
    assert from_layer["many_to_one_miou"] == pytest.approx(from_raster["many_to_one_miou"], abs=1e-6)
    assert from_layer["valid_pixels"] == from_raster["valid_pixels"]


def test_evaluate_errors_are_one_line(labelled, tmp_path):
    missing = run("evaluate", tmp_path / "nope.tif", TRUTH)
    assert missing.returncode == InputError.exit_code and "nope.tif" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "m.json").write_text("{}")
    exists = run("evaluate", labelled / "out.tif", TRUTH, "--json", tmp_path / "m.json")
    assert exists.returncode == OutputError.exit_code and "--overwrite" in exists.stderr


def test_classes_name_cli_with_a_mapping(labelled):
    result = run("classes", "name", labelled / "out.gpkg", "--names", "0=a,1=a", "-o", labelled / "n.gpkg",
                 "--report", labelled / "n.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((labelled / "n.json").read_text())
    assert report["merged_names"][0] == "a" and report["classes"][1]["name"] == "a"
    assert "named classes: a, class 2" in result.stdout
