"""Does pre-training on pseudo-labels help few-label fine-tuning? The ALPS chain, end to end, on CPU.

For each scene with ground truth:

    geoalps label SCENE --engine classical --raster-out X.labels.tif       (pseudo-labels, no ground truth)
    geoalps pretrain --images SCENE --labels X.labels.tif -o X.pre.pt      (supervised on pseudo-classes)
    geoalps train --images SCENE --labels GT --label-fraction 0.1 --init X.pre.pt   (arm "alps")
    geoalps train --images SCENE --labels GT --label-fraction 0.1                   (arm "scratch")
    geoalps predict / geoalps evaluate on every pixel outside the labelled cells

Both arms of one seed share the seed, the budget, the labelled cells and the validation strip;
only the starting weights differ. Several seeds draw other cells, so the spread says how
much the answer depends on which 10 % was labelled. Every step is the real CLI in a subprocess.

    nice python benchmarks/alps_effect/run.py                  # about 10-15 min on 2 busy cores
    python benchmarks/alps_effect/run.py --quick               # a 2-minute smoke run

Writes work files to --work (default /tmp/geoalps-alps-effect) and the figures to
benchmarks/alps_effect/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import from_bounds

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("GEOALPS_SHARED", REPO.parent / "shared"))


def datasets(work: Path) -> list[dict]:
    """The benchmark scenes; the aerial building mask is copied with a usable nodata (see README)."""
    out = [{
        "name": "sample_rgbn",
        "scene": REPO / "sample_data" / "scene_rgbn_u16.tif",
        "truth": REPO / "sample_data" / "scene_rgbn_u16.gt.tif",
        "about": "synthetic 4-band RGBN, 1280x1280 px at 0.5 m, 7 classes, nodata corner",
        "tile": 128,
    }]
    aerial = SHARED / "realdata" / "aerial" / "aerial_rgb_030m_1.tif"
    if aerial.is_file():
        mask = aerial.with_name("aerial_rgb_030m_1.buildings.tif")
        fixed = work / "aerial.buildings.gt.tif"
        # The shipped mask tags background 0 as nodata; it is a class here (building vs not).
        with rasterio.open(mask) as src:
            profile = src.profile | {"nodata": 255}
            data = src.read()
        with rasterio.open(fixed, "w", **profile) as dst:
            dst.write(data)
        out.append({
            "name": "aerial_buildings",
            "scene": aerial,
            "truth": fixed,
            "about": "real aerial RGB, 512x512 px at 0.3 m, building / not building (1.4 % of pixels, one corner)",
            # 64 px cells: 10 % of 512 x 512 px is six of them, instead of two 128 px cells that
            # mostly miss the only corner with buildings.
            "tile": 64,
        })
    else:
        print(f"skipping the aerial scene: {aerial} not found", file=sys.stderr)
    return out


def geoalps(*args: str) -> float:
    """Run one geoalps command (niced), fail loudly, return its wall time."""
    cmd = ["nice", "-n", "10", sys.executable, "-m", "geoalps", *map(str, args)]
    print("$ geoalps " + " ".join(map(str, args)), flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def test_truth(truth: Path, model: Path, out: Path) -> None:
    """Ground truth with the model's training cells set to nodata: score only unseen pixels."""
    import torch

    boxes = torch.load(model, map_location="cpu", weights_only=True)["training"]["regions"]["train"]
    with rasterio.open(truth) as src:
        data, profile = src.read(1), src.profile
        for box in boxes:
            w = from_bounds(*box, transform=src.transform)
            r0, c0 = round(w.row_off), round(w.col_off)
            data[r0 : r0 + round(w.height), c0 : c0 + round(w.width)] = src.nodata
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/geoalps-alps-effect"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--datasets", nargs="+", default=None, help="names to run (default: all)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, one seed: checks the plumbing only")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    common = ["--model", "tiny", "--batch-size", "8", "--lr", "1e-3", "--threads", "1", "-q", "--overwrite"]
    pre_budget = ["--epochs", "6", "--steps-per-epoch", "50"]
    fine_budget = ["--epochs", "4", "--steps-per-epoch", "40"]
    if args.quick:
        pre_budget, fine_budget, args.seeds = ["--epochs", "1", "--steps-per-epoch", "5"], ["--epochs", "1", "--steps-per-epoch", "5"], args.seeds[:1]

    results = {"protocol": {
        "model": "tiny Swin (embed 24, depths 1-1-2-1) + UPerNet, batch 8, AdamW lr 1e-3, tile per dataset",
        "pretrain": " ".join(pre_budget) + " (pseudo-labels from geoalps label --engine classical)",
        "finetune": " ".join(fine_budget) + f" --label-fraction {args.label_fraction}",
        "scored": "every ground-truth pixel outside the labelled training cells (validation strip included)",
        "seeds": args.seeds,
    }, "datasets": {}}
    for ds in datasets(args.work):
        if args.datasets and ds["name"] not in args.datasets:
            continue
        name, scene, truth = ds["name"], ds["scene"], ds["truth"]
        model = [*common, "--tile-size", str(ds["tile"])]
        w = args.work / name
        timing = {"label": geoalps("label", scene, "--engine", "classical", "--raster-out", f"{w}.labels.tif",
                                   "-o", f"{w}.gpkg", "--overwrite", "-q")}
        timing["pretrain"] = geoalps("pretrain", "--images", scene, "--labels", f"{w}.labels.tif", "-o", f"{w}.pre.pt",
                                     *model, *pre_budget)
        runs = []
        for seed in args.seeds:
            row = {"seed": seed}
            for arm, init in (("alps", ["--init", f"{w}.pre.pt"]), ("scratch", [])):
                ckpt = Path(f"{w}.{arm}.s{seed}.pt")
                timing[f"train_{arm}_s{seed}"] = geoalps(
                    "train", "--images", scene, "--labels", truth, "-o", ckpt, "--label-fraction", args.label_fraction,
                    "--seed", seed, *init, *model, *fine_budget)
                pred = Path(f"{w}.{arm}.s{seed}.pred.tif")
                timing[f"predict_{arm}_s{seed}"] = geoalps("predict", ckpt, scene, "-o", pred, "--threads", "1", "--overwrite", "-q")
                test_gt = Path(f"{w}.s{seed}.test_gt.tif")
                test_truth(truth, ckpt, test_gt)
                scores = Path(f"{w}.{arm}.s{seed}.json")
                geoalps("evaluate", pred, test_gt, "--json", scores, "--overwrite")
                row[arm] = json.loads(scores.read_text())
            row["gain_miou"] = row["alps"]["miou"] - row["scratch"]["miou"]
            runs.append(row)
            print(f"{name} seed {seed}: mIoU alps {row['alps']['miou']:.4f}  scratch {row['scratch']['miou']:.4f}  "
                  f"gain {row['gain_miou']:+.4f}", flush=True)
        alps = [r["alps"]["miou"] for r in runs]
        scratch = [r["scratch"]["miou"] for r in runs]
        results["datasets"][name] = {
            "about": ds["about"],
            "tile_px": ds["tile"],
            "runs": runs,
            "mean_miou_alps": float(np.mean(alps)),
            "mean_miou_scratch": float(np.mean(scratch)),
            "mean_gain": float(np.mean(alps) - np.mean(scratch)),
            "seconds": {k: round(v, 1) for k, v in timing.items()},
        }
    out = args.work / "results.quick.json" if args.quick else args.out
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n| dataset | seeds | mIoU ALPS init | mIoU random init | gain |\n|---|---|---|---|---|")
    for name, r in results["datasets"].items():
        print(f"| {name} | {len(r['runs'])} | {r['mean_miou_alps']:.4f} | {r['mean_miou_scratch']:.4f} | {r['mean_gain']:+.4f} |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
