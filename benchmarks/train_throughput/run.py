"""Training and inference throughput (images/s) of the geoalps segmentation nets on this machine.

One process, random weights and random input (no disk I/O): the figure is the network's cost,
what an epoch of ``geoalps pretrain``/``train`` costs on top of reading tiles. A training step is
forward + cross-entropy + backward + AdamW, as in the training loop.

    nice python benchmarks/train_throughput/run.py                     # swin_t and tiny at 224 px
    python benchmarks/train_throughput/run.py --tile-size 128 --threads 1 --models tiny

Each model's row (with the commit) is appended to ``results.jsonl`` beside this script.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _measure import append_rows  # noqa: E402

RESULTS = HERE / "results.jsonl"


def measure(size: str, tile: int, batch: int, bands: int, classes: int, steps: int, warmup: int, device: str) -> dict:
    """Median-free simple timing: ``warmup`` untimed steps, then ``steps`` timed ones."""
    import torch
    import torch.nn.functional as F

    from geoalps.train.models import build_model, make_arch

    torch.manual_seed(0)
    model = build_model(make_arch(size, bands, classes, tile)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, bands, tile, tile, device=device)
    y = torch.randint(0, classes, (batch, tile, tile), device=device)

    def train_step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    model.train()
    for _ in range(warmup):
        train_step()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    train_s = time.perf_counter() - started

    model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        started = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
        infer_s = time.perf_counter() - started
    return {
        "model": size,
        "tile_px": tile,
        "batch": batch,
        "bands": bands,
        "threads": torch.get_num_threads(),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_images_per_s": round(steps * batch / train_s, 2),
        "infer_images_per_s": round(steps * batch / infer_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["swin_t", "tiny"])
    parser.add_argument("--tile-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--tag", default="", help="recorded with the rows")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results.jsonl to append the rows to")
    args = parser.parse_args()

    import torch

    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(m, args.tile_size, args.batch_size, args.bands, args.classes, args.steps, args.warmup, args.device)
            for m in args.models]
    print("| model | tile | batch | bands | threads | params (M) | train img/s | inference img/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['tile_px']} | {r['batch']} | {r['bands']} | {r['threads']} | {r['params_M']} | "
              f"{r['train_images_per_s']} | {r['infer_images_per_s']} |")
    append_rows(args.results, rows, tag=args.tag, device=args.device)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
