"""benchmarks/label_quality/tile_time.py: each arm times the geoalps of its own tree.

``python -c`` puts the working directory ahead of PYTHONPATH, so a timing run started from the
repository root used to import the current tree's geoalps in the baseline arm too (a change then
timed against itself). Two stand-in trees whose ``label`` report different times tell the arms apart.
"""
from __future__ import annotations

import importlib.util
import platform

from conftest import REPO

TILE_TIME = REPO / "benchmarks" / "label_quality" / "tile_time.py"


def _tree(root, seconds: float):
    package = root / "geoalps"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "class _Result:\n"
        f"    stats = {{'tile_seconds': {seconds!r}, 'tiles': 2}}\n"
        "def label(*args, **kwargs):\n"
        "    return _Result()\n")
    return root


def test_each_arm_imports_its_own_tree(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("tile_time_under_test", TILE_TIME)
    tile_time = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tile_time)
    baseline, current = _tree(tmp_path / "baseline", 3.0), _tree(tmp_path / "current", 5.0)
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"")
    monkeypatch.chdir(current)  # as when run from the current tree's root
    assert tile_time.time_once(baseline, scene, {}).tile_s == 1.5
    timed = tile_time.time_once(current, scene, {})
    assert timed.tile_s == 2.5 and 0 <= timed.run_s < 60  # the whole call's wall time, next to it


def test_default_scenes_are_imagery_not_the_samples_truth(tmp_path, monkeypatch):
    """The default scenes are the bank's selection half and the shipped samples' imagery; the
    samples' truth rasters (``scene_*.gt.tif``, class ids) match ``scene_*.tif`` too and were
    timed as scenes before."""
    import json

    spec = importlib.util.spec_from_file_location("tile_time_under_test", TILE_TIME)
    tile_time = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tile_time)
    bank, samples = tmp_path / "bank", tmp_path / "sample_data"
    bank.mkdir()
    samples.mkdir()
    (bank / "bank.json").write_text(json.dumps({"scenes": [
        {"image": "s01.tif", "half": "selection"}, {"image": "r01.tif", "half": "report"}]}))
    for name in ("scene_a.tif", "scene_a.gt.tif", "scene_b.tif", "scene_b.gt.tif"):
        (samples / name).write_bytes(b"")
    monkeypatch.setattr(tile_time, "BANK", bank)
    monkeypatch.setattr(tile_time, "ROOT", tmp_path)
    assert [p.name for p in tile_time.default_scenes()] == ["s01.tif", "scene_a.tif", "scene_b.tif"]



def test_rows_name_the_cpu_they_were_timed_on(tmp_path):
    """Ratios move with the CPU (x1.62 on one machine, x1.65 on another, same code): each row says
    which CPU it is from."""
    spec = importlib.util.spec_from_file_location("tile_time_under_test", TILE_TIME)
    tile_time = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tile_time)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n"
                       "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz\n")
    assert tile_time.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # no model name (some ARM kernels)
    assert tile_time.cpu_model(cpuinfo) == (platform.processor() or "unknown")
    assert tile_time.cpu_model(tmp_path / "absent") == (platform.processor() or "unknown")


def test_warm_times_the_second_label_call_of_the_process(tmp_path, monkeypatch):
    """``--warm``: each process labels once untimed and reports its second call, so what a run
    pays once (imports, the first scikit-learn fit) is left out of both arms; without it the
    first call is the one timed."""
    spec = importlib.util.spec_from_file_location("tile_time_under_test", TILE_TIME)
    tile_time = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tile_time)
    package = tmp_path / "tree" / "geoalps"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "calls = []\n"
        "class _Result:\n"
        "    def __init__(self, seconds):\n"
        "        self.stats = {'tile_seconds': seconds, 'tiles': 1}\n"
        "def label(*args, **kwargs):\n"
        "    calls.append(1)\n"
        "    return _Result(9.0 if len(calls) == 1 else 4.0)\n")
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"")
    monkeypatch.chdir(tmp_path / "tree")
    assert tile_time.time_once(tmp_path / "tree", scene, {}).tile_s == 9.0
    assert tile_time.time_once(tmp_path / "tree", scene, {}, warm=True).tile_s == 4.0
