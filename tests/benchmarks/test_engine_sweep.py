"""benchmarks/label_quality/engine_sweep.py on one real scene: its settings reach the engine.

The sweep overrides ``ClassicalEngine.settings``; if the override did not reach ``segment``, every
setting would give the default's regions. A setting equal to the default must give exactly the
default's regions, a different smoothing different ones, and the figures must agree with a
direct count.
"""
from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import REALDATA, REPO

SWEEP = REPO / "benchmarks" / "label_quality" / "engine_sweep.py"
OSBS = REALDATA / "aerial" / "neon_osbs_029_rgb.tif"


@pytest.mark.skipif(not OSBS.exists(), reason="needs ../shared/realdata")
def test_sweep_settings_reach_the_engine(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("engine_sweep", SWEEP)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    out = tmp_path / "rows.jsonl"
    assert sweep.main(["--scenes", "neon_osbs", "--sigma", "0.3,2.5", "--json", str(out)]) == 0
    rows = {r["setting"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"default", "sigma 0.3 scale 100 min 128 merge 10", "sigma 2.5 scale 100 min 128 merge 10"}
    default, same, smoothed = rows.values()
    # The grid's first point is the engine's default at 0.1 m (the split on, as by default):
    # identical regions and figures.
    from geoalps.engines.classical import SPLIT_REGION_FACTOR

    assert default["settings"] == same["settings"] == {"scale": 100.0, "min_size_px": 128, "sigma_px": 0.3,
                                                       "merge_distance": 10.0,
                                                       "split_min_px": SPLIT_REGION_FACTOR * 128}
    assert (default["regions"], default["found"]) == (same["regions"], same["found"])
    assert smoothed["regions"] != default["regions"], "the smoothing override must reach felzenszwalb"
    for row in rows.values():
        assert row["n"] == 61 and row["recall"] == pytest.approx(row["found"] / 61)
        assert 0.0 <= row["mean_best_iou"] <= 1.0
    assert "| default |" in capsys.readouterr().out
