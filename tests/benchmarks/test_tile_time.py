"""benchmarks/label_quality/tile_time.py: each arm times the geoalps of its own tree.

``python -c`` puts the working directory ahead of PYTHONPATH, so a timing run started from the
repository root used to import the current tree's geoalps in the baseline arm too (a change then
timed against itself). Two stand-in trees whose ``label`` report different times tell the arms apart.
"""
from __future__ import annotations

import importlib.util

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
    assert tile_time.time_once(baseline, scene, {}) == 1.5
    assert tile_time.time_once(current, scene, {}) == 2.5
