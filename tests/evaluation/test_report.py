"""Writing results: strict JSON and the confusion figure, both atomically."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from matplotlib.image import imread

from geoalps.errors import GeoAlpsError
from geoalps.evaluation import confusion_figure, row_normalised, write_json


def test_row_normalised_divides_each_row_by_its_sum_and_keeps_empty_rows_zero():
    table = np.array([[1, 3, 0], [0, 0, 0], [2, 2, 4]])
    assert row_normalised(table).tolist() == [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0], [0.25, 0.25, 0.5]]


def test_confusion_figure_writes_a_png_and_no_temporary_file(tmp_path):
    table = np.array([[50, 10, 0], [30, 0, 5], [0, 20, 15], [5, 0, 5]])
    path = confusion_figure(table, [0, 1, 2], [0, 1, 4], ["ground", "building", "road", "tree", "water"],
                            tmp_path / "confusion.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = imread(path).shape
    assert height > 100 and width > 100
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]


def test_confusion_figure_refuses_ids_that_do_not_fit_the_table(tmp_path):
    with pytest.raises(GeoAlpsError, match="table is 3x2 but ids give 2x2"):
        confusion_figure(np.ones((3, 2)), [0], [0, 1], None, tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []


def test_write_json_converts_numpy_and_replaces_the_old_file(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text("old")
    write_json({"miou": np.float64(0.25), "n": np.int64(3), "ids": np.array([1, 2]), "none": None}, path)
    assert json.loads(path.read_text()) == {"miou": 0.25, "n": 3, "ids": [1, 2], "none": None}
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_json({"a": 1}, tmp_path / "scores.json")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("bad", [{"miou": float("nan")}, {"what": object()}])
def test_write_json_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, bad):
    path = tmp_path / "scores.json"
    path.write_text("old")
    with pytest.raises((ValueError, TypeError)):
        write_json(bad, path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_write_json_into_a_missing_folder(tmp_path):
    with pytest.raises(GeoAlpsError, match="does not exist"):
        write_json({}, tmp_path / "nowhere" / "scores.json")
