"""Figures for `geoalps label` on the shipped sample scene and a real aerial tile: wall time,
tiles/s, peak memory (whole process tree), polygons, distinct pseudo-classes, and the share of
wall time spent outside the mask engine (reading, features, k-means, vectorising, writing).

    .venv/bin/python benchmarks/label_figures/run.py [--engine classical] [--workers 1]

Each scene's row (with the commit) is appended to ``results.jsonl`` beside this script.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyogrio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _measure import REPO, append_rows, run_measured  # noqa: E402

RESULTS = HERE / "results.jsonl"
SCENES = [REPO / "sample_data/scene_rgbn_u16.tif", REPO.parent / "shared/realdata/aerial/aerial_rgb_030m_1.tif"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="classical")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--tag", default="", help="recorded with the rows")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results.jsonl to append the rows to")
    parser.add_argument("extra", nargs="*", help="more geoalps label options, after --")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scene in SCENES:
            if not scene.exists():
                print(f"skipping {scene}: not found", file=sys.stderr)
                continue
            out = Path(tmp) / f"{scene.stem}.gpkg"
            stats_file = Path(tmp) / f"{scene.stem}.json"
            cmd = [sys.executable, "-c", (
                "import json,sys; from geoalps import label; "
                f"s=label({str(scene)!r}, {str(out)!r}, engine={args.engine!r}, workers={int(args.workers)}, "
                "quiet=True, overwrite=True).stats; "
                f"open({str(stats_file)!r},'w').write(json.dumps(s))")]
            measured = run_measured(cmd)
            if measured["returncode"] != 0:
                print(f"{scene.name}: failed: {measured['stderr']}", file=sys.stderr)
                continue
            stats = json.loads(stats_file.read_text())
            gdf = pyogrio.read_dataframe(out, layer="masks", columns=["pseudo_class"])
            rows.append({
                "scene": scene.name, "engine": stats["engine"], "workers": stats["workers"],
                "wall_s": round(measured["seconds"], 2), "label_s": round(stats["seconds"], 2),
                "tiles": stats["tiles"], "tiles_per_s": round(stats["tiles"] / stats["seconds"], 3),
                "peak_rss_mb": round(measured["peak_rss_mb"], 1), "polygons": len(gdf),
                "classes": int(gdf.pseudo_class.nunique()),
                "outside_engine_frac": round(1 - stats["engine_seconds"] / stats["seconds"], 3),
            })
    append_rows(args.results, rows, tag=args.tag)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
