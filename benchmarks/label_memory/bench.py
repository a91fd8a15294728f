"""Wall time and peak memory of ``geoalps label`` on the sample scene with each learned engine.

Random-weight checkpoints of the released shapes (vit_b; SAM 2.1 hiera_tiny and hiera_small) are
saved as real files and passed with ``--checkpoint``, so each run takes the user's path end to end
(a fresh process: imports, model load, 4 tiles of 1024 px, features, k-means, GeoPackage). Peak
memory is the summed RSS of the process tree (benchmarks/_measure.py). ``--baseline DIR`` also
runs every engine with the geoalps source tree in DIR (e.g. ``git archive`` of an older commit)
first, in the same session: the "before" of a change. Masks are compared through the GeoPackages
(same number of objects, same scores and classes, same geometries).

    $ nice -n 10 .venv/bin/python benchmarks/label_memory/bench.py --engines vit_b --baseline /tmp/geoalps-before
    $ nice -n 10 .venv/bin/python benchmarks/label_memory/bench.py --engines hiera_tiny hiera_small vit_b

Rows are appended to benchmarks/label_memory/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

from _measure import run_measured  # noqa: E402

SCENE = REPO / "sample_data" / "scene_rgbn_u16.tif"


def checkpoint(engine: str, folder: Path) -> Path:
    import torch

    torch.manual_seed(0)
    if engine.startswith("vit"):
        from geoalps.engines.sam.models import SAM_CONFIGS, build_sam
        from tests.sam_models import save_sam_checkpoint

        return save_sam_checkpoint(build_sam(SAM_CONFIGS[engine]), folder / f"random_{engine}.pth")
    from geoalps.engines.sam2.models import SAM2_CONFIGS, build_sam2
    from tests.sam_models import save_sam2_checkpoint

    return save_sam2_checkpoint(build_sam2(SAM2_CONFIGS[f"sam2.1_{engine}"]), folder / f"random_{engine}.pt")


def same_output(a: Path, b: Path) -> dict:
    import pyogrio

    x, y = pyogrio.read_dataframe(a, layer="masks"), pyogrio.read_dataframe(b, layer="masks")
    same = len(x) == len(y) and x.drop(columns="geometry").equals(y.drop(columns="geometry")) and all(
        g.equals_exact(h, 1e-6) for g, h in zip(x.geometry, y.geometry))
    return {"objects": [len(x), len(y)], "identical": bool(same)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["hiera_tiny", "hiera_small", "vit_b"])
    parser.add_argument("--baseline", type=Path, default=None, help="geoalps source tree of the 'before'")
    parser.add_argument("--points-per-side", type=int, default=16)
    args = parser.parse_args()
    cli = [str(Path(sys.executable).parent / "geoalps"), "label", str(SCENE), "--points-per-side",
           str(args.points_per_side), "--classes", "6", "-q", "--overwrite"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for engine in args.engines:
            ckpt = checkpoint(engine, folder)
            runs = [("before", args.baseline)] if args.baseline else []
            runs.append(("after", REPO))
            outs = {}
            for which, tree in runs:
                out = folder / f"{engine}_{which}.gpkg"
                env = dict(os.environ, PYTHONPATH=str(tree))
                name = "sam" if engine.startswith("vit") else "sam2"
                measured = run_measured([*cli, "--engine", name, "--checkpoint", str(ckpt), "-o", str(out)], env=env)
                outs[which] = out
                row = {"engine": engine, "code": which, "date": time.strftime("%Y-%m-%d %H:%M"),
                       "load": round(os.getloadavg()[0], 1), "points_per_side": args.points_per_side,
                       "seconds": round(measured["seconds"], 1), "peak_rss_mb": round(measured["peak_rss_mb"]),
                       "returncode": measured["returncode"]}
                if measured["returncode"]:
                    row["stderr"] = measured["stderr"]
                print(json.dumps(row), flush=True)
                rows.append(row)
            if len(outs) == 2 and all(p.exists() for p in outs.values()):
                rows[-1]["vs_before"] = same_output(outs["before"], outs["after"])
                print(json.dumps(rows[-1]["vs_before"]), flush=True)
    with open(HERE / "results.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
