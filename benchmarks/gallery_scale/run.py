"""Class gallery cost on a big output (issue 12): time and peak memory of ``geoalps classes
gallery`` on the labelling output of the 20,480 px mosaic of ``benchmarks/scaling``, against the
gallery of the shipped sample scene in the same run (the baseline).

The gallery reads attributes in batches, the chips it shows by window and a decimated overview, so
its cost should follow the number of objects only through the attribute pass, not the scene size.

    .venv/bin/python benchmarks/gallery_scale/run.py [--size 20480] [--workers 2] [--scratch DIR]

Labelling the 20,480 px mosaic (529 tiles) takes most of the run (tens of minutes on 2 cores); its
output is kept in --scratch and reused when present (``--reuse``). Each invocation appends one row
(the commit and the figures) to ``results.jsonl`` beside this script.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyogrio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _measure import SOURCE, append_rows, mosaic_vrt, run_measured  # noqa: E402

RESULTS = HERE / "results.jsonl"

GEOALPS = str(Path(sys.executable).parent / "geoalps")


def labelled(scene: Path, folder: Path, workers: int, reuse: bool) -> tuple[Path, dict | None]:
    out = folder / f"{scene.stem}.gpkg"
    if reuse and out.exists():
        return out, None
    measured = run_measured([GEOALPS, "label", str(scene), "-o", str(out), "--engine", "classical",
                             "--workers", str(workers), "--overwrite", "--quiet"])
    if measured["returncode"] != 0:
        raise SystemExit(f"{scene}: geoalps label failed: {measured['stderr']}")
    return out, {"seconds": round(measured["seconds"], 1), "peak_rss_mb": round(measured["peak_rss_mb"], 1)}


def gallery(output: Path, picture: Path) -> dict:
    measured = run_measured([GEOALPS, "classes", "gallery", str(output), "-o", str(picture), "--overwrite"])
    if measured["returncode"] != 0:
        raise SystemExit(f"{output}: geoalps classes gallery failed: {measured['stderr']}")
    return {"objects": pyogrio.read_info(output, layer="masks")["features"],
            "seconds": round(measured["seconds"], 1), "peak_rss_mb": round(measured["peak_rss_mb"], 1),
            "png_kb": round(picture.stat().st_size / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20480)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/geoalps-gallery-scale"))
    parser.add_argument("--reuse", action="store_true", help="reuse labelling outputs already in --scratch")
    parser.add_argument("--tag", default="", help="recorded with the row")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results.jsonl to append the row to")
    args = parser.parse_args()
    args.scratch.mkdir(parents=True, exist_ok=True)
    small_out, small_label = labelled(SOURCE, args.scratch, args.workers, args.reuse)
    big_scene = mosaic_vrt(args.size, args.scratch)
    big_out, big_label = labelled(big_scene, args.scratch, args.workers, args.reuse)
    small = gallery(small_out, args.scratch / "sample_gallery.png")
    big = gallery(big_out, args.scratch / f"mosaic_{args.size}_gallery.png")
    result = {
        "sample": {"label": small_label, "gallery": small},
        f"mosaic_{args.size}": {"label": big_label, "gallery": big},
        "ratios_big_vs_sample": {"objects": round(big["objects"] / small["objects"], 1),
                                 "gallery_seconds": round(big["seconds"] / small["seconds"], 2),
                                 "gallery_peak_rss": round(big["peak_rss_mb"] / small["peak_rss_mb"], 2)},
    }
    append_rows(args.results, [result], tag=args.tag, workers=args.workers)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
