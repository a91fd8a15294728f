"""benchmarks/: one folder per benchmark (script, README with its command, results.jsonl rows that
carry the commit), `_measure.py` the one shared helper, the top README an index of the folders.

Runs no benchmark: the layout, the shared helpers on small inputs, and the fingerprint comparison
on two small fingerprint files.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import rasterio
from rasterio.windows import Window

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_is_a_folder_with_its_command_and_an_index_line():
    loose = sorted(p.name for p in BENCHMARKS.glob("*.py"))
    assert loose == ["_measure.py"], f"scripts outside a folder: {loose}"
    assert not list(BENCHMARKS.glob("*.results.json")), "results belong in their benchmark's folder"
    index = (BENCHMARKS / "README.md").read_text()
    assert len(index.splitlines()) < 60, "the top README is an index; dated figures go in the folders"
    folders = sorted(p for p in BENCHMARKS.iterdir() if p.is_dir() and any(p.glob("*.py")))
    assert len(folders) >= 16
    for folder in folders:
        readme = folder / "README.md"
        assert readme.is_file(), f"{folder.name}: no README"
        assert f"]({folder.name}/README.md)" in index, f"{folder.name}: not in the index"
    for name in ("label_figures", "scaling", "gallery_scale", "polygon_coverage", "output_fingerprint",
                 "train_throughput"):
        text = (BENCHMARKS / name / "README.md").read_text()
        assert f"benchmarks/{name}/run.py" in text and (BENCHMARKS / name / "run.py").is_file()
        assert "results.jsonl" in text and "results.jsonl" in (BENCHMARKS / name / "run.py").read_text()
    for link in re.findall(r"\]\(([^)]+)\)", index):
        assert (BENCHMARKS / link).is_file(), f"index links to a missing {link}"


def test_rows_carry_the_date_the_commit_and_the_load(tmp_path):
    measure = _load(BENCHMARKS / "_measure.py", "_measure_under_test")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    results = tmp_path / "results.jsonl"
    measure.append_rows(results, [{"wall_s": 1.5}, {"wall_s": 2.0, "tag": "own"}], tag="t", scene="s")
    measure.append_rows(results, [{"wall_s": 3.0}])
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["wall_s"] for r in rows] == [1.5, 2.0, 3.0]
    assert [r.get("tag") for r in rows] == ["t", "own", None] and rows[0]["scene"] == "s"
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", row["date"])
        assert len(row["load"]) == 3
        if head:  # a git checkout: the row names its commit (+dirty with uncommitted changes)
            assert row["commit"].split("+")[0] == head and row["commit"] in (head, f"{head}+dirty")


def test_measured_peaks_say_which_process_held_the_memory():
    """A driver that starts a child holding 300 MB: the summed peak has it, and the child's own
    peak (not the driver's) says where it was."""
    measure = _load(BENCHMARKS / "_measure.py", "_measure_under_test")
    child = "import time; block = b'x' * (300 * 2**20); time.sleep(1.5)"
    driver = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    measured = measure.run_measured([sys.executable, "-c", driver], interval=0.05)
    assert measured["returncode"] == 0
    by_process = measured["peak_rss_mb_by_process"]
    (child_mb,) = by_process["descendants"]
    assert 300 <= child_mb < 400 and by_process["driver"] < 100
    assert child_mb + by_process["driver"] * 0.5 <= measured["peak_rss_mb"] <= child_mb + by_process["driver"] + 1


def test_mosaic_of_the_sample_scene_repeats_it(tmp_path):
    measure = _load(BENCHMARKS / "_measure.py", "_measure_under_test")
    vrt = measure.mosaic_vrt(2000, tmp_path)
    with rasterio.open(measure.SOURCE) as src, rasterio.open(vrt) as mosaic:
        assert (mosaic.width, mosaic.height, mosaic.count) == (2000, 2000, src.count)
        assert mosaic.transform == src.transform and mosaic.crs == src.crs
        second = Window(src.width, 0, 2000 - src.width, 50)  # the second copy, cut at the mosaic's edge
        np.testing.assert_array_equal(mosaic.read(window=second), src.read(window=Window(0, 0, 2000 - src.width, 50)))
        assert src.width < 2000 and src.height < 2000


def test_fingerprint_comparison_records_both_commits_and_what_differs(tmp_path, capsys):
    fingerprint = _load(BENCHMARKS / "output_fingerprint" / "run.py", "output_fingerprint_under_test")
    run = {"layer": {"polygons": 3, "rows_sha256": "a"}, "raster": {"pixels_sha256": "b"}}
    before = {"_meta": {"commit": "1111111"}, "s:classical:workers1": run, "s:classical:workers2": run}
    after = {"_meta": {"commit": "2222222"}, "s:classical:workers1": run,
             "s:classical:workers2": {**run, "raster": {"pixels_sha256": "c"}}}
    (tmp_path / "before.json").write_text(json.dumps(before))
    (tmp_path / "after.json").write_text(json.dumps(after))
    results = tmp_path / "results.jsonl"
    assert fingerprint.compare(tmp_path / "before.json", tmp_path / "after.json", results=results, tag="x") == 1
    assert "1 same, 1 differ" in capsys.readouterr().out
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert (row["before_commit"], row["after_commit"], row["tag"]) == ("1111111", "2222222", "x")
    assert (row["runs"], row["same"], row["differ"], row["differing"]) == (2, 1, 1, ["s:classical:workers2"])
    (tmp_path / "after.json").write_text(json.dumps({k: v for k, v in before.items() if k != "_meta"}))
    assert fingerprint.compare(tmp_path / "before.json", tmp_path / "after.json", results=results) == 0
    assert json.loads(results.read_text().splitlines()[-1])["after_commit"].startswith("unknown")


def test_the_moved_scripts_import_their_shared_helpers():
    """gallery_scale took the mosaic from scaling.py; both now take it from _measure.py."""
    for name in ("gallery_scale", "scaling", "label_figures", "polygon_coverage", "train_throughput"):
        module = _load(BENCHMARKS / name / "run.py", f"{name}_under_test")
        assert module.RESULTS == BENCHMARKS / name / "results.jsonl"
