"""Scale-out figures for `geoalps label` (issue 3), all measured in one session:

- memory: peak RSS summed over the whole process tree (driver + dask workers) for a ~5k x 5k and a
  ~20k x 20k 4-band uint16 scene with the classical engine; target: 20k under 2 GB and within 1.3x
  of 5k.
- throughput: tiles/s with --workers 2 against --workers 1 on the same scene; target >= 1.7x on 2 cores.
  Also the bound that tile work alone sets (2 x time per tile alone / time per tile with two
  workers busy, from the kept tile results) and how much of it the run reached.

The big scenes are VRT mosaics of the shipped sample scene (no pixels are copied; nothing is
committed), written to --scratch. Each invocation appends one row (the commit, the runs, the
ratios) to ``results.jsonl`` beside this script.

    .venv/bin/python benchmarks/scaling/run.py memory --sizes 5120 20480 --workers 2
    .venv/bin/python benchmarks/scaling/run.py throughput --size 3840 --repeat 3
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _measure import append_rows, mirrored_mosaic, mosaic_vrt, run_measured  # noqa: E402

RESULTS = HERE / "results.jsonl"


def label_run(scene: Path, workers: int, folder: Path, extra: list[str]) -> dict:
    out = folder / f"{scene.stem}_w{workers}.gpkg"
    cmd = [str(Path(sys.executable).parent / "geoalps"), "label", str(scene), "-o", str(out), "--engine", "classical",
           "--workers", str(workers), "--overwrite", "--keep-work", "--progress-lines", *extra]
    measured = run_measured(cmd)
    if measured["returncode"] != 0:
        raise SystemExit(f"{scene}: geoalps failed: {measured['stderr']}")
    import pyogrio

    with rasterio.open(scene) as src:
        from geoalps.inputs.tiles import plan_tiles

        tiles = len(plan_tiles(src.width, src.height, 1024, 128))
    polygons = pyogrio.read_info(out, layer="masks")["features"]
    # Time per tile as the workers measured it (kept tile results): how much two busy cores slow
    # each tile down, whatever geoalps does around the tiles.
    work = Path(f"{out}.geoalps-work")
    from geoalps.labelling.work_store import WorkStore

    store = WorkStore(work)
    results = [store.load(key) for key in sorted(store.finished())]
    shutil.rmtree(work)
    return {"scene": scene.name, "workers": workers, "seconds": round(measured["seconds"], 1), "tiles": tiles,
            "tiles_per_s": round(tiles / measured["seconds"], 3), "peak_rss_mb": round(measured["peak_rss_mb"], 1),
            "peak_rss_mb_by_process": measured["peak_rss_mb_by_process"],
            "polygons": polygons, "tile_s": round(float(np.mean([r.seconds for r in results])), 3),
            "engine_s_per_tile": round(float(np.mean([r.engine_seconds for r in results])), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["memory", "throughput"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5120, 20480])
    parser.add_argument("--size", type=int, default=3840)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="throughput: alternating 1/2-worker pairs")
    parser.add_argument("--source", type=Path, default=None,
                        help="memory: mirror this scene instead of repeating the sample (a cover that spans the scene)")
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--tag", default="", help="recorded with the row (what was measured: a branch, a change)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results.jsonl to append the row to")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        folder = Path(tmp)
        if args.what == "memory":
            def scene(size: int) -> Path:
                return mirrored_mosaic(args.source, size, folder) if args.source else mosaic_vrt(size, folder)

            rows = [label_run(scene(size), args.workers, folder, args.extra) for size in args.sizes]
            result = {"runs": rows, "peak_ratio_last_vs_first": round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)}
        else:
            # 1 and 2 workers alternate, so a slow spell of a shared host hits both alike.
            scene = mosaic_vrt(args.size, folder)
            runs, ratios, bounds = [], [], []
            for _ in range(args.repeat):
                one = label_run(scene, 1, folder, args.extra)
                two = label_run(scene, 2, folder, args.extra)
                runs += [one, two]
                ratios.append(round(two["tiles_per_s"] / one["tiles_per_s"], 3))
                # What tile work alone allows: two tiles at a time, each at the 2-worker speed.
                bounds.append(round(2 * one["tile_s"] / two["tile_s"], 3))
            result = {"runs": runs, "speedup_2_vs_1": ratios, "median_speedup": float(np.median(ratios)),
                      "tile_work_bound": bounds,
                      "share_of_bound": [round(r / b, 3) for r, b in zip(ratios, bounds)]}
    source = {"source": str(args.source)} if args.source else {}
    append_rows(args.results, [{"what": args.what, **source, **result}], tag=args.tag, extra=args.extra)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
