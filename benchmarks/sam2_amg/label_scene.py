"""``geoalps label --engine sam2`` end to end on a 2048 px scene: another tree (main) against this one.

    git worktree add --detach /tmp/geoalps-main main
    nice -n 10 .venv/bin/python benchmarks/sam2_amg/label_scene.py --other /tmp/geoalps-main

The scene is the aerial mosaic of benchmarks/sam_amg and its three mirror images (2048 x 2048,
3 bands, EPSG:32632, 0.3 m), the checkpoint the tiny random-weight SAM 2 of the tests
(``tests.sam_models``) saved as the releases are. Each case runs the other tree's CLI, then this
tree's (``python -m geoalps`` with ``PYTHONPATH`` set to the tree), one after the other, wall
time of the whole command; the polygons written are counted. Rows (both commits, the load before
and after) go to benchmarks/sam2_amg/results.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

CASES = {
    "default": [],
    "zero": ["--pred-iou-thresh", "0", "--stability-thresh", "0", "--max-area-frac", "1"],
}


def _commit(tree: Path) -> str:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True).stdout.splitlines()
    dirty = [line for line in status if not line.endswith("results.jsonl")]  # rows of other runs are no code
    return out.stdout.strip() + ("+dirty" if dirty else "")


def scene(folder: Path) -> Path:
    """The 2048 px scene: the mosaic, mirrored left-right, top-bottom and both."""
    import importlib.util

    import rasterio
    from rasterio.transform import from_origin

    spec = importlib.util.spec_from_file_location("sam_amg_bench", HERE.parent / "sam_amg" / "bench.py")
    sam_amg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sam_amg)
    tile, _ = sam_amg.aerial_tile()
    top = np.concatenate([tile, tile[:, ::-1]], axis=1)
    image = np.concatenate([top, top[::-1]], axis=0)
    path = folder / "aerial_2048.tif"
    profile = dict(driver="GTiff", width=2048, height=2048, count=3, dtype="uint8", crs="EPSG:32632",
                   transform=from_origin(680000.0, 5240000.0, 0.3, 0.3), tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return path


def checkpoint(folder: Path) -> Path:
    from tests.sam_models import build_tiny_sam2, save_sam2_checkpoint

    return save_sam2_checkpoint(build_tiny_sam2(seed=0), folder / "sam2.1_tiny_random.pt")


def label(tree: Path, scene_path: Path, ckpt: Path, out: Path, points: int, extra: list[str]) -> tuple[float, int]:
    import pyogrio

    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-m", "geoalps", "label", str(scene_path), "-o", str(out), "--engine", "sam2",
               "--checkpoint", str(ckpt), "--points-per-side", str(points), "--overwrite", *extra]
    t0 = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    return seconds, int(pyogrio.read_info(out, layer="masks")["features"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="a checkout of the tree to compare (main)")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--cases", default="default,zero")
    args = parser.parse_args()
    trees = {"other": args.other.resolve(), "this": REPO}
    commits = {name: _commit(tree) for name, tree in trees.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene_path, ckpt = scene(folder), checkpoint(folder)
        for case in args.cases.split(","):
            load = [os.getloadavg()[0]]
            seconds, polygons = {}, {}
            for name, tree in trees.items():
                seconds[name], polygons[name] = label(tree, scene_path, ckpt, folder / f"{case}_{name}.gpkg",
                                                      args.points_per_side, CASES[case])
                print(f"{case} {name} ({commits[name]}): {seconds[name]:.1f} s, {polygons[name]} polygons", flush=True)
            load.append(os.getloadavg()[0])
            row = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commits["this"], "other_commit": commits["other"],
                   "case": f"geoalps label --engine sam2, 2048 px aerial scene, tiny random SAM 2, "
                           f"{args.points_per_side}x{args.points_per_side} points, {case} thresholds",
                   "settings": CASES[case], "load": [round(v, 1) for v in load],
                   "other_s": round(seconds["other"], 1), "this_s": round(seconds["this"], 1),
                   "speed_up": round(seconds["other"] / seconds["this"], 2),
                   "polygons": {"other": polygons["other"], "this": polygons["this"]}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(HERE / "results.jsonl", "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
