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
    nice python benchmarks/alps_effect/run.py --datasets zion_landsat8 --pre-steps 600 --fine-steps 640 --seeds 0

Writes work files to --work (default /tmp/geoalps-alps-effect) and appends one row per (dataset,
seed, arm) to benchmarks/alps_effect/results.jsonl: the commit measured (``+dirty`` when tracked
files differ), the budget, mIoU, the majority-class floor on the same scored pixels and the time.
A pre-trained checkpoint is named by its budget and reused when it exists (it is deterministic).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("GEOALPS_SHARED", REPO.parent / "shared"))
#: Steps per epoch (validation and the resume checkpoint run once per epoch); budgets are totals.
PRE_EPOCH_STEPS, FINE_EPOCH_STEPS = 50, 40


def datasets(work: Path, names: list[str] | None = None) -> list[dict]:
    """The benchmark scenes (``names``: only those); the aerial building mask is copied with a usable
    nodata (see README), written aside and renamed so that parallel runs never read half a file."""
    out = [{
        "name": "sample_rgbn",
        "scene": REPO / "sample_data" / "scene_rgbn_u16.tif",
        "truth": REPO / "sample_data" / "scene_rgbn_u16.gt.tif",
        "about": "synthetic 4-band RGBN, 1280x1280 px at 0.5 m, 7 classes, nodata corner",
        "tile": 128,
    }]
    aerial = SHARED / "realdata" / "aerial" / "aerial_rgb_030m_1.tif"
    if names and "aerial_buildings" not in names:
        pass
    elif aerial.is_file():
        mask = aerial.with_name("aerial_rgb_030m_1.buildings.tif")
        fixed = work / "aerial.buildings.gt.tif"
        # The shipped mask tags background 0 as nodata; it is a class here (building vs not).
        with rasterio.open(mask) as src:
            profile = src.profile | {"nodata": 255}
            data = src.read()
        part = fixed.with_name(f"{fixed.stem}.{os.getpid()}.part.tif")
        with rasterio.open(part, "w", **profile) as dst:
            dst.write(data)
        os.replace(part, fixed)
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
    zion = SHARED / "realdata" / "multispectral" / "landsat8_zion_bgrn_u16.tif"
    if zion.is_file():
        out.append({
            "name": "zion_landsat8",
            "scene": zion,
            "truth": zion.with_name("landsat8_zion.nlcd8.tif"),
            "about": "real Landsat-8 B,G,R,NIR DN, 1128x1428 px at 30 m, NLCD 2011 in 8 classes "
                     "(forest 53 %, shrubland 37 %, barren 7 %, five classes under 1.3 % each)",
            # 64 px cells (1.9 km): 10 % of the labelled area is ~40 cells scattered over the park
            # instead of ~10 cells of 128 px, so the rare classes are less often missed, and a
            # step costs a quarter of a 128 px one.
            "tile": 64,
        })
    else:
        print(f"skipping the Zion scene: {zion} not found", file=sys.stderr)
    return out


def measured_commit() -> str:
    """HEAD of the repo whose geoalps the subprocesses import, ``+dirty`` when tracked files differ."""
    where = subprocess.run([sys.executable, "-c", "import geoalps; print(geoalps.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    root = Path(where).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def majority_floor(test_gt: Path) -> dict:
    """mIoU of predicting the most frequent scored class everywhere (evaluate's convention: the
    mean over the classes present in truth or prediction, so the floor is its share / n classes)."""
    with rasterio.open(test_gt) as src:
        data, nodata = src.read(1), src.nodata
    values = data[data != nodata] if nodata is not None else data.ravel()
    classes, counts = np.unique(values, return_counts=True)
    top = int(np.argmax(counts))
    return {"class": int(classes[top]), "miou": float(counts[top] / counts.sum() / len(classes)),
            "classes": len(classes)}


def last_val_miou(model: Path) -> float | None:
    """The last epoch's validation mIoU from the run's .metrics.csv (pseudo-labels for pretrain)."""
    metrics = model.with_name(model.name[: -len(model.suffix)] + ".metrics.csv")
    if not metrics.is_file():
        return None
    rows = list(csv.DictReader(metrics.open()))
    value = rows[-1].get("val_miou") if rows else None
    return round(float(value), 4) if value not in (None, "") else None


def budget(total: int, per_epoch: int) -> list[str]:
    """--epochs/--steps-per-epoch for a total of steps (epochs of at most per_epoch steps)."""
    epochs = -(-total // per_epoch)
    if total % epochs:
        sys.exit(f"--pre-steps/--fine-steps {total}: not a multiple of {epochs} epochs; pick a multiple of {per_epoch}")
    return ["--epochs", str(epochs), "--steps-per-epoch", str(total // epochs)]


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

    # regions are pixel boxes [scene index, col, row, width, height] of the scene's grid
    boxes = torch.load(model, map_location="cpu", weights_only=True)["training"]["regions"]["train"]
    with rasterio.open(truth) as src:
        data, profile = src.read(1), src.profile
        for _, c0, r0, width, height in boxes:
            data[r0 : r0 + height, c0 : c0 + width] = src.nodata
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/geoalps-alps-effect"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--datasets", nargs="+", default=None, help="names to run (default: all)")
    parser.add_argument("--pre-steps", type=int, default=300,
                        help=f"pre-training steps on pseudo-labels, in epochs of {PRE_EPOCH_STEPS} (default 300)")
    parser.add_argument("--fine-steps", type=int, default=160,
                        help=f"fine-tuning steps per arm, in epochs of {FINE_EPOCH_STEPS} (default 160)")
    parser.add_argument("--arms", nargs="+", default=["alps", "scratch"], choices=["alps", "scratch"])
    parser.add_argument("--tag", default="", help="free text stored in every row (e.g. budget-search)")
    parser.add_argument("--out", type=Path, default=HERE / "results.jsonl", help="rows are appended")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, one seed: checks the plumbing only")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    common = ["--model", "tiny", "--batch-size", "8", "--lr", "1e-3", "--threads", "1", "-q", "--overwrite"]
    if args.quick:
        args.pre_steps, args.fine_steps, args.seeds = 5, 5, args.seeds[:1]
    pre_budget = budget(args.pre_steps, PRE_EPOCH_STEPS)
    fine_budget = budget(args.fine_steps, FINE_EPOCH_STEPS)
    out = args.work / "results.quick.jsonl" if args.quick else args.out
    commit = measured_commit()
    print(f"measuring geoalps at {commit}; pre {' '.join(pre_budget)}; fine {' '.join(fine_budget)}", flush=True)

    summary = {}
    for ds in datasets(args.work, args.datasets):
        if args.datasets and ds["name"] not in args.datasets:
            continue
        name, scene, truth = ds["name"], ds["scene"], ds["truth"]
        model = [*common, "--tile-size", str(ds["tile"])]
        w = args.work / name
        timing = {}
        # Pseudo-labels and pre-training only for the ALPS arm, so random-init runs can start
        # beside the one run that makes them (a second would collide on the same outputs).
        if "alps" in args.arms and not Path(f"{w}.labels.tif").is_file():
            timing["label"] = geoalps("label", scene, "--engine", "classical", "--raster-out", f"{w}.labels.tif",
                                      "-o", f"{w}.gpkg", "--overwrite", "-q")
        pre = Path(f"{w}.pre{args.pre_steps}.pt")
        if "alps" in args.arms and not pre.is_file():
            timing["pretrain"] = geoalps("pretrain", "--images", scene, "--labels", f"{w}.labels.tif", "-o", pre,
                                         *model, *pre_budget)
        runs = []
        for seed in args.seeds:
            row = {"seed": seed}
            for arm in args.arms:
                init = ["--init", pre] if arm == "alps" else []
                stem = f"{w}.{arm}.p{args.pre_steps}.f{args.fine_steps}.s{seed}" if arm == "alps" else \
                    f"{w}.{arm}.f{args.fine_steps}.s{seed}"
                ckpt = Path(f"{stem}.pt")
                seconds_train = geoalps(
                    "train", "--images", scene, "--labels", truth, "-o", ckpt, "--label-fraction", args.label_fraction,
                    "--seed", seed, *init, *model, *fine_budget)
                pred = Path(f"{stem}.pred.tif")
                seconds_predict = geoalps("predict", ckpt, scene, "-o", pred, "--threads", "1", "--overwrite", "-q")
                test_gt = Path(f"{stem}.test_gt.tif")
                test_truth(truth, ckpt, test_gt)
                scores = Path(f"{stem}.json")
                geoalps("evaluate", pred, test_gt, "--json", scores, "--overwrite")
                report = json.loads(scores.read_text())
                if report.get("scored_as") != "identity":
                    sys.exit(f"{scores}: scored as {report.get('scored_as')!r}, expected class ids as predicted")
                got = report["identity"]
                floor = majority_floor(test_gt)
                record = {
                    "dataset": name, "seed": seed, "arm": arm, "commit": commit, "tag": args.tag,
                    "tile_px": ds["tile"], "label_fraction": args.label_fraction,
                    "pre_steps": args.pre_steps if arm == "alps" else 0, "fine_steps": args.fine_steps,
                    "batch": 8, "lr": 1e-3, "model": "tiny",
                    "miou": got["miou"], "overall_accuracy": got.get("overall_accuracy"),
                    "floor_miou": floor["miou"], "floor_class": floor["class"], "classes_scored": floor["classes"],
                    "iou_per_class": {str(r["class"]): round(r["iou"], 4) for r in got.get("per_class", [])},
                    "pixels_scored": got.get("pixels_scored"),
                    "val_miou_last_epoch": last_val_miou(ckpt),
                    "pretrain_val_miou_pseudo": last_val_miou(pre) if arm == "alps" else None,
                    "seconds_train": round(seconds_train, 1), "seconds_predict": round(seconds_predict, 1),
                    "seconds_pretrain": (round(timing["pretrain"], 1)
                                         if arm == "alps" and "pretrain" in timing else None),
                    "load_avg_1min": round(os.getloadavg()[0], 1),
                    "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                }
                with out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                row[arm] = record
                print(f"{name} seed {seed} {arm}: mIoU {record['miou']:.4f} (floor {record['floor_miou']:.4f}), "
                      f"train {seconds_train:.0f} s", flush=True)
            if len(args.arms) == 2:
                row["gain"] = row["alps"]["miou"] - row["scratch"]["miou"]
                print(f"{name} seed {seed}: gain {row['gain']:+.4f}", flush=True)
            runs.append(row)
        summary[name] = runs
    if len(args.arms) == 2:
        print("\n| dataset | seeds | ALPS mean (min-max) | random mean (min-max) | gain mean (min-max) | gain > 0 |"
              "\n|---|---|---|---|---|---|")
        for name, runs in summary.items():
            a, r = np.array([x["alps"]["miou"] for x in runs]), np.array([x["scratch"]["miou"] for x in runs])
            g = a - r
            print(f"| {name} | {len(runs)} | {a.mean():.4f} ({a.min():.4f}-{a.max():.4f}) | {r.mean():.4f} "
                  f"({r.min():.4f}-{r.max():.4f}) | {g.mean():+.4f} ({g.min():+.4f}-{g.max():+.4f}) | "
                  f"{int((g > 0).sum())} of {len(g)} |")
    print(f"\nappended to {out}")


if __name__ == "__main__":
    main()
