"""The ALPS-vs-random table from results.jsonl rows, for runs split over several processes.

    python benchmarks/alps_effect/summary.py --fine-steps 640 --pre-steps 1200
    python benchmarks/alps_effect/summary.py --search          # random-init arm per budget, seed 0
    python benchmarks/alps_effect/summary.py --tag split-default-3cb1f43   # only the rows of one campaign

Pairs the two arms of each (dataset, seed) at the given budget (the last row wins when a run was
repeated: runs are deterministic) and prints mean, min and max of each arm and of the gain, and
how many seeds gained. Reads only; costs nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def search_table(rows: list[dict], seed: int) -> None:
    print("| dataset | arm | pre steps | fine steps | mIoU | floor | IoU per class | train s | load |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in sorted((r for r in rows if r["seed"] == seed),
                    key=lambda r: (r["dataset"], r["arm"], r["pre_steps"], r["fine_steps"])):
        ious = " ".join(f"{k}:{v:.2f}" for k, v in r["iou_per_class"].items() if v > 0)
        print(f"| {r['dataset']} | {r['arm']} | {r['pre_steps']} | {r['fine_steps']} | {r['miou']:.4f} | "
              f"{r['floor_miou']:.4f} | {ious} | {r['seconds_train']:.0f} | {r['load_avg_1min']} |")


def arms_table(rows: list[dict], pre_steps: int, fine_steps: int) -> None:
    cell: dict[tuple, float] = {}
    floors: dict[str, set] = {}
    for r in rows:
        if r["fine_steps"] != fine_steps or (r["arm"] == "alps" and r["pre_steps"] != pre_steps):
            continue
        cell[(r["dataset"], r["seed"], r["arm"])] = r["miou"]
        floors.setdefault(r["dataset"], set()).add(round(r["floor_miou"], 4))
    print(f"pre-training {pre_steps} steps, fine-tuning {fine_steps} steps\n")
    print("| dataset | seed | ALPS init | random init | gain |\n|---|---|---|---|---|")
    totals = []
    for name in sorted({k[0] for k in cell}):
        seeds = sorted(s for (d, s, a) in cell if d == name and a == "alps" and (d, s, "scratch") in cell)
        if not seeds:
            continue
        a = np.array([cell[(name, s, "alps")] for s in seeds])
        r = np.array([cell[(name, s, "scratch")] for s in seeds])
        for s, x, y in zip(seeds, a, r):
            print(f"| {name} | {s} | {x:.4f} | {y:.4f} | {x - y:+.4f} |")
        totals.append((name, seeds, a, r))
    print("\n| dataset | seeds | ALPS mean (min-max) | random mean (min-max) | gain mean (min-max) | seeds gaining | "
          "majority floor |\n|---|---|---|---|---|---|---|")
    for name, seeds, a, r in totals:
        g = a - r
        floor = ", ".join(f"{f:.4f}" for f in sorted(floors[name]))
        print(f"| {name} | {len(seeds)} | {a.mean():.4f} ({a.min():.4f}-{a.max():.4f}) | {r.mean():.4f} "
              f"({r.min():.4f}-{r.max():.4f}) | {g.mean():+.4f} ({g.min():+.4f} to {g.max():+.4f}) | "
              f"{int((g > 0).sum())} of {len(g)} | {floor} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    parser.add_argument("--pre-steps", type=int, default=1200)
    parser.add_argument("--fine-steps", type=int, default=640)
    parser.add_argument("--search", action="store_true", help="one row per run of --seed instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default=None, help="only rows with this tag (one campaign: the pseudo-labels "
                        "change with the labelling default, so rows of different campaigns do not pair)")
    args = parser.parse_args()
    rows = [r for r in load(args.results) if args.tag is None or r.get("tag") == args.tag]
    if args.search:
        search_table(rows, args.seed)
    else:
        arms_table(rows, args.pre_steps, args.fine_steps)


if __name__ == "__main__":
    main()
