"""`geoalps evaluate --mapping`: a supervised prediction scored as it is (identity), pseudo-classes
matched as before, and the truth's class names in the report, the JSON and the figure.

The truth is real: USGS NLCD land cover on a Landsat-8 grid (classes 1..8, names in its
CLASS_CODES tag). The prediction is that truth with known changes, written by the one class-raster
writer as `geoalps predict` writes it, so the identity scores can be counted independently.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from geoalps.errors import OptionError
from geoalps.evaluation import evaluate_pseudo_labels
from geoalps.inputs.scene import open_scene
from geoalps.outputs.raster import open_label_raster

NLCD_NAMES = {1: "water", 2: "developed", 3: "barren", 4: "forest", 5: "shrubland", 6: "herbaceous",
              7: "cultivated", 8: "wetlands"}


def run(*args):
    return subprocess.run([sys.executable, "-m", "geoalps", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def nlcd(tmp_path_factory):
    """(truth path, truth array, prediction path, prediction array): the prediction is the truth
    with forest turned to shrubland in the top 200 rows, herbaceous predicted where the truth is
    water in the left 300 columns, and no prediction in a 50-row band."""
    from conftest import REALDATA

    truth_path = REALDATA / "multispectral" / "landsat8_zion.nlcd8.tif"
    if not truth_path.is_file():
        pytest.skip(f"shared real data not found at {truth_path}")
    folder = tmp_path_factory.mktemp("mapping")
    with rasterio.open(truth_path) as src:
        truth = src.read(1)
    predicted = truth.copy()
    predicted[:200][predicted[:200] == 4] = 5
    predicted[:, :300][predicted[:, :300] == 1] = 6
    valid = truth != 255
    valid[600:650] = False
    predicted = np.where(valid, predicted, 255).astype(np.uint8)
    path = folder / "pred.tif"
    names = ["nothing"] + [NLCD_NAMES[k] for k in range(1, 9)]
    with open_label_raster(path, open_scene(truth_path), 9, what="class", class_names=names) as dst:
        dst.write(predicted, 1)
    return truth_path, truth, path, predicted


def expected_identity(truth: np.ndarray, predicted: np.ndarray) -> dict[int, float]:
    """IoU per class counted pixel by pixel: scored = truth not nodata; no prediction = a miss."""
    scored = truth != 255
    t, p = truth[scored], predicted[scored]
    out = {}
    for k in range(9):
        inter = np.sum((t == k) & (p == k))
        union = np.sum(t == k) + np.sum(p == k) - inter
        if union:
            out[k] = inter / union
    return out


def test_a_predict_raster_is_scored_as_it_is_by_default(nlcd, tmp_path):
    truth_path, truth, pred_path, predicted = nlcd
    done = run("evaluate", pred_path, truth_path, "--json", tmp_path / "m.json", "--figure", tmp_path / "cm.png")
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["scored_as"] == "identity"
    scores = written["identity"]
    expected = expected_identity(truth, predicted)
    assert {row["class"]: row["iou"] for row in scores["per_class"]} == pytest.approx(expected, rel=1e-12)
    assert scores["miou"] == pytest.approx(np.mean(list(expected.values())), rel=1e-12)
    scored = truth != 255
    assert scores["overall_accuracy"] == pytest.approx(np.mean(predicted[scored] == truth[scored]), rel=1e-12)
    assert scores["pixels_scored"] == int(scored.sum())
    assert {row["class"]: row["name"] for row in scores["per_class"]} == {k: NLCD_NAMES[k] for k in expected}
    assert written["class_names"] == {str(k): v for k, v in NLCD_NAMES.items()}  # CLASS_CODES, by id
    assert "overall accuracy" in done.stdout and f"{scores['miou']:.4f}" in done.stdout
    forest = next(line for line in done.stdout.splitlines() if " forest " in line)
    assert f"{expected[4]:.4f}" in forest
    assert "many-to-one mIoU" not in done.stdout  # nothing is matched
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matching_can_still_be_asked_for_and_is_the_default_for_pseudo_classes(nlcd, tmp_path):
    truth_path, truth, pred_path, predicted = nlcd
    matched = evaluate_pseudo_labels(pred_path, truth_path, mapping="many-to-one")
    assert matched["scored_as"] == "many-to-one" and "identity" not in matched
    # predicted shrubland (5) holds the top rows' forest too, herbaceous (6) some water: the
    # majority mapping keeps every id on itself, so its pixel accuracy is the identity's
    scored = truth != 255
    assert matched["mapping"]["many_to_one"] == {str(k): k for k in range(1, 9) if str(k) in matched["mapping"]["many_to_one"]}
    assert matched["pixel_accuracy"] == pytest.approx(np.mean(predicted[scored] == truth[scored]), rel=1e-12)
    done = run("evaluate", pred_path, truth_path, "--mapping", "hungarian")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("Hungarian mIoU")

    pseudo = tmp_path / "pseudo.tif"
    with open_label_raster(pseudo, open_scene(truth_path), 9, what="pseudo_class") as dst:
        dst.write(predicted, 1)
    result = evaluate_pseudo_labels(pseudo, truth_path)
    assert result["scored_as"] == "many-to-one" and "identity" not in result
    identity = evaluate_pseudo_labels(pseudo, truth_path, mapping="identity")
    assert identity["identity"]["miou"] == pytest.approx(np.mean(list(expected_identity(truth, predicted).values())))


def test_truth_names_given_on_the_command_line_win(nlcd, tmp_path):
    truth_path, _, pred_path, _ = nlcd
    done = run("evaluate", pred_path, truth_path, "--truth-names", "4=conifers, 5=sagebrush",
               "--json", tmp_path / "m.json")
    assert done.returncode == 0, done.stderr
    rows = {r["class"]: r["name"] for r in json.loads((tmp_path / "m.json").read_text())["identity"]["per_class"]}
    assert rows[4] == "conifers" and rows[5] == "sagebrush" and rows[1] == "water"
    assert any(" conifers " in line for line in done.stdout.splitlines())

    bad = run("evaluate", pred_path, truth_path, "--truth-names", "4:forest")
    assert bad.returncode == OptionError.exit_code
    assert bad.stderr.count("\n") == 1 and "--truth-names" in bad.stderr and "Traceback" not in bad.stderr
    from geoalps.evaluation.mapping import parse_class_names

    assert parse_class_names("1=water, 2=developed ,") == {1: "water", 2: "developed"}


def test_the_figure_names_true_and_named_classes(nlcd, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    truth_path, _, _, predicted = nlcd
    named = tmp_path / "named.tif"
    with open_label_raster(named, open_scene(truth_path), 9, what="class_id",
                           class_names=["field"] + [f"class {k}" for k in range(1, 8)] + ["marsh"]) as dst:
        dst.write(predicted, 1)
    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), save(self, *a, **k))[1])
    from click.testing import CliRunner

    from geoalps.cli import main

    result = CliRunner().invoke(main, ["evaluate", str(named), str(truth_path), "--figure", str(tmp_path / "cm.png")])
    assert result.exit_code == 0, result.output
    axes = figures[-1].axes[0]
    columns = [t.get_text() for t in axes.get_xticklabels()]
    rows = [t.get_text() for t in axes.get_yticklabels()]
    assert columns and all(c == f"{c.split()[0]} {NLCD_NAMES[int(c.split()[0])]}" for c in columns)
    assert "4 forest" in columns and "1 water" in columns
    assert rows[-1] == "no prediction" and "8 marsh" in rows and "4" in rows  # default names add nothing
    assert axes.get_ylabel() == "pseudo-class"


def test_identity_scores_from_a_table():
    from geoalps.evaluation.mapping import identity_scores

    # rows: predicted 0, 1, 3, then no prediction; columns: true 0, 1, 2
    table = np.array([[5, 1, 0], [0, 3, 2], [0, 0, 1], [1, 0, 0]])
    scores = identity_scores(table, [0, 1, 3], [0, 1, 2], {0: "a", 2: "c"})
    by_class = {r["class"]: (r["iou"], r["name"]) for r in scores["per_class"]}
    assert by_class == {0: (5 / 7, "a"), 1: (3 / 6, None), 2: (0.0, "c"), 3: (0.0, None)}
    assert scores["overall_accuracy"] == pytest.approx(8 / 13)
    assert scores["miou"] == pytest.approx((5 / 7 + 0.5) / 4)
    assert scores["pixels_scored"] == 13


def test_gdal_category_names_and_attribute_tables_name_the_truth(tmp_path):
    """Where GDAL's Python bindings import (rasterio cannot read either), category names and a
    raster attribute table's name column name the true classes."""
    gdal = pytest.importorskip("osgeo.gdal", reason="GDAL's Python bindings (osgeo) not installed")
    from geoalps.evaluation.mapping import gdal_category_names

    gdal.UseExceptions()
    for kind in ("categories", "table"):
        path = str(tmp_path / f"{kind}.tif")
        dataset = gdal.GetDriverByName("GTiff").Create(path, 4, 4, 1, gdal.GDT_Byte)
        band = dataset.GetRasterBand(1)
        if kind == "categories":
            band.SetCategoryNames(["", "water", "developed"])
        else:
            table = gdal.RasterAttributeTable()
            table.CreateColumn("VALUE", gdal.GFT_Integer, gdal.GFU_MinMax)
            table.CreateColumn("NAME", gdal.GFT_String, gdal.GFU_Name)
            for row, (value, name) in enumerate([(11, "open water"), (41, "deciduous")]):
                table.SetValueAsInt(row, 0, value)
                table.SetValueAsString(row, 1, name)
            band.SetDefaultRAT(table)
        band = dataset = None
    assert gdal_category_names(tmp_path / "categories.tif") == {1: "water", 2: "developed"}
    assert gdal_category_names(tmp_path / "table.tif") == {11: "open water", 41: "deciduous"}


def test_the_cli_offers_the_librarys_mappings_without_importing_it():
    from geoalps.cli import evaluate as cli_evaluate
    from geoalps.evaluation import mapping

    assert cli_evaluate.MAPPING_CHOICES == mapping.MAPPING_CHOICES
    done = subprocess.run([sys.executable, "-c", "import sys, geoalps.cli; print('geoalps.evaluation' in sys.modules)"],
                          capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
