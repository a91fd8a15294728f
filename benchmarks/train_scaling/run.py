"""Data-parallel scaling of ``geoalps pretrain`` on CPU: samples per second with 1 and 2 processes.

Both arms run in this one invocation, interleaved (1, 2, 2, 1, ...), so a machine shared with
other work slows both alike. Every run is the real CLI in a subprocess: the 1-process arm as
``python -m geoalps pretrain ...``, the 2-process arm as ``torchrun --nproc-per-node 2 -m geoalps
pretrain ...`` (gloo on 127.0.0.1); each process has one torch thread and the same per-process
batch, so the 2-process arm steps on twice the tiles (the global batch). Samples per second is
the last epoch's ``images_per_s`` of the metrics CSV (all processes' tiles over the slowest
one's time; the first epoch holds start-up).

    python benchmarks/train_scaling/run.py                 # about 3 min on 2 idle cores
    python benchmarks/train_scaling/run.py --rounds 1      # quicker, noisier

Appends one row per arm and a summary row (with the commit) to benchmarks/train_scaling/results.jsonl.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_arm(processes: int, args: argparse.Namespace, work: Path, index: int) -> float:
    output = work / f"p{processes}_{index}.pt"
    command = ["-m", "geoalps", "pretrain", "--images", str(args.scene), "--labels", str(args.labels), "-o", str(output),
               "--model", "tiny", "--tile-size", str(args.tile), "--batch-size", str(args.batch),
               "--epochs", str(args.epochs), "--steps-per-epoch", str(args.steps), "--threads", "1", "--seed", "0",
               "--val-fraction", "0", "-q", "--overwrite"]
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    done = subprocess.run(launcher + command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"{processes}-process run failed:\n{done.stderr[-3000:]}")
    with open(output.with_name(f"{output.stem}.metrics.csv")) as fh:
        rows = list(csv.DictReader(fh))
    rate = float(rows[-1]["images_per_s"])
    print(f"{processes} process(es): {rate:.1f} samples/s (run {time.perf_counter() - started:.0f} s)", flush=True)
    return rate


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=REPO / "sample_data" / "scene_rgbn_u16.tif")
    parser.add_argument("--labels", type=Path, default=REPO / "sample_data" / "scene_rgbn_u16.gt.tif")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="tiles per batch and per process")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of (1, 2)-process runs, interleaved")
    parser.add_argument("--work", type=Path, default=Path("/tmp/geoalps-train-scaling"))
    parser.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    rates: dict[int, list[float]] = {1: [], 2: []}
    order = [p for r in range(args.rounds) for p in ((1, 2) if r % 2 == 0 else (2, 1))]
    for i, processes in enumerate(order):
        rates[processes].append(run_arm(processes, args, args.work, i))
    medians = {p: statistics.median(v) for p, v in rates.items()}
    speedup = medians[2] / medians[1]
    print(f"speed-up with 2 processes: {speedup:.2f}x")
    common = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "commit": commit(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "model": "tiny", "tile_px": args.tile, "batch_per_process": args.batch,
              "epochs": args.epochs, "steps_per_epoch": args.steps, "threads_per_process": 1,
              "scene": args.scene.name}
    with open(args.out, "a") as fh:
        for processes, values in rates.items():
            fh.write(json.dumps({**common, "processes": processes, "samples_per_s": [round(v, 2) for v in values],
                                 "median_samples_per_s": round(medians[processes], 2)}) + "\n")
        fh.write(json.dumps({**common, "summary": True, "speedup_2_vs_1": round(speedup, 3)}) + "\n")


if __name__ == "__main__":
    main()
