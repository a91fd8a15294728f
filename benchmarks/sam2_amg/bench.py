"""Faithfulness and speed of geoalps's Sam2FastMaskGenerator against sam2's SAM2AutomaticMaskGenerator.

Both generators run in this one process on the same model, image and settings (reference first),
as benchmarks/sam_amg does for SAM 1 (its matching and images are reused):

- faithfulness: same count, and every mask of each side matched by a mask of the other with
  IoU >= 0.99 (two empty masks count as a match); random weights (the decoder given the test
  gains of ``sharpen_random_sam2_decoder`` so prompts give distinct masks), thresholds at 0;
- speed: wall seconds for one 1024 px tile at 32x32 points, default thresholds and thresholds 0.

Models are built with random weights, saved as real checkpoint files ({"model": state_dict}) and
loaded with ``load_sam2``, the path users take with sam2.1_hiera_tiny.pt.

    $ nice -n 10 .venv/bin/python benchmarks/sam2_amg/bench.py tiny
    $ nice -n 10 .venv/bin/python benchmarks/sam2_amg/bench.py hiera_tiny --points-per-side 16
    $ nice -n 10 .venv/bin/python benchmarks/sam2_amg/bench.py hiera_tiny --speed-only
    $ nice -n 10 .venv/bin/python benchmarks/sam2_amg/bench.py hiera_base_plus --faithful-only --points-per-side 8

Rows are appended to benchmarks/sam2_amg/results.jsonl.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from geoalps.engines.sam2.generators import Sam2FastMaskGenerator, reference_generate  # noqa: E402
from geoalps.engines.sam2.models import SAM2_CONFIGS, build_sam2, load_sam2  # noqa: E402
from tests.sam_models import build_tiny_sam2, save_sam2_checkpoint, sharpen_random_sam2_decoder  # noqa: E402

_spec = importlib.util.spec_from_file_location("sam_amg_bench", HERE.parent / "sam_amg" / "bench.py")
sam_amg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sam_amg)  # compare(), match(), synthetic_image(), aerial_tile()


def random_model(name: str):
    """A random-weight model of ``name`` saved as a checkpoint and loaded as users load one."""
    torch.manual_seed(0)
    if name == "tiny":
        model = build_tiny_sam2(seed=0)
    else:
        model = build_sam2(SAM2_CONFIGS[f"sam2.1_{name}"]).eval()
        with torch.no_grad():
            sharpen_random_sam2_decoder(model)
    with tempfile.TemporaryDirectory() as folder:
        path = save_sam2_checkpoint(model, Path(folder) / f"random_{name}.pt")
        del model
        loaded, model_name = load_sam2(path, device="cpu")
    return loaded, model_name


def compare(model, image, name: str, **settings) -> dict:
    """benchmarks/sam_amg's comparison with SAM 2's generators."""
    return sam_amg.compare(model, image, name, reference=reference_generate, fast=Sam2FastMaskGenerator,
                           **settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["tiny", "hiera_tiny", "hiera_small", "hiera_base_plus", "hiera_large"])
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--faithful-only", action="store_true")
    parser.add_argument("--points-per-side", type=int, default=32, help="faithfulness cases' grid")
    args = parser.parse_args()
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "load": round(os.getloadavg()[0], 1)}
    model, model_name = random_model(args.model)
    meta["model"] = model_name
    zero = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    rows = []
    if args.model == "tiny":
        small = sam_amg.synthetic_image(300, 400)
        tile = sam_amg.synthetic_image(1024, 1024, seed=1)
        rows.append(compare(model, small, "tiny 300x400 thresholds 0", points_per_side=16, **zero))
        rows.append(compare(model, small, "tiny 300x400 thresholds 0, crop_n_layers=1",
                            points_per_side=6, crop_n_layers=1, **zero))
        rows.append(compare(model, tile, "tiny 1024 thresholds 0 (exact cells)", points_per_side=16, **zero))
    else:
        tile, source = sam_amg.aerial_tile()
        meta["image"] = source
        if not args.speed_only:
            rows.append(compare(model, tile, f"{args.model} 1024 thresholds 0, {args.points_per_side}x{args.points_per_side}",
                                points_per_side=args.points_per_side, **zero))
        if not args.faithful_only:
            rows.append(compare(model, tile, f"{args.model} 1024 32x32 default thresholds (0.88/0.95)",
                                points_per_side=32))
            rows.append(compare(model, tile, f"{args.model} 1024 32x32 thresholds 0", points_per_side=32, **zero))
    with open(HERE / "results.jsonl", "a") as out:
        for row in rows:
            out.write(json.dumps({**meta, **row}) + "\n")


if __name__ == "__main__":
    main()
