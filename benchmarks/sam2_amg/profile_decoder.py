"""Where the SAM 2 prompt decoder's time goes (geoalps issue 28): CPU seconds per prompt, one thread.

    nice -n 10 .venv/bin/python benchmarks/sam2_amg/profile_decoder.py hiera_tiny --prompts 64

One process: the random-weight model of benchmarks/sam2_amg (decoder gains), the aerial 1024 px
mosaic encoded once, then ``--prompts`` prompts spread over the 32 x 32 grid decoded in batches
of 8 on one intra-op thread (as each decoder thread of the fast generator runs), for each decoder
variant, at default thresholds (``min_iou`` 0.88: only prompts whose IoU passes are upscaled) and
at thresholds 0 (every prompt upscaled). Times are ``time.process_time`` (CPU seconds of this
process), which a shared machine's load moves less than wall time; variants are interleaved over
``--reps`` repetitions and the smallest is kept. ``--baseline-decoder`` adds another commit's
``geoalps/engines/sam/decoder.py`` as the variant "baseline" (float32). ``--torch-profile`` adds the torch profiler's
top operators (self CPU time) for the float32 decoder. Also prints the largest predicted-IoU
difference of each variant against float32.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench2 = _load("sam2_amg_bench", HERE / "bench.py")  # random_model(); sam_amg.aerial_tile()

from geoalps.engines.sam2.generators import Sam2FastMaskGenerator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["tiny", "hiera_tiny", "hiera_small", "hiera_base_plus"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--variants", default="float32,bfloat16")
    parser.add_argument("--torch-profile", action="store_true")
    parser.add_argument("--baseline-decoder", type=Path, help="another commit's geoalps/engines/sam/decoder.py")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, name = bench2.random_model(args.model)
    tile, source = bench2.sam_amg.aerial_tile()
    generators = {v: Sam2FastMaskGenerator(model, decoder_dtype=v) for v in args.variants.split(",")}
    if args.baseline_decoder:
        floor = _load("sam2_amg_floor", HERE / "floor.py")
        generators = {"baseline": floor.baseline_generator(Sam2FastMaskGenerator, args.baseline_decoder)(model),
                      **generators}
    first = next(iter(generators.values()))
    with torch.inference_mode():
        ((features, _, _),) = first.encoder.encode_all([tile])
    grid = first.point_grids[0] * np.array([[1024, 1024]])
    pick = np.linspace(0, len(grid) - 1, args.prompts).round().astype(int)
    points = first._model_points(grid[pick], (1024, 1024))
    torch.set_num_threads(1)
    for generator in generators.values():
        generator.decoder.set_embedding(features)

    def run(generator, min_iou):
        ious = []
        t0 = time.process_time()
        for start in range(0, len(points), 8):
            iou, _, _ = generator.decoder.decode(points[start : start + 8], min_iou)
            ious.append(iou)
        return time.process_time() - t0, torch.cat(ious)

    best, ious = {}, {}
    for _ in range(args.reps):
        for variant, generator in generators.items():
            for case, min_iou in (("default", 0.88), ("zero", None)):
                seconds, iou = run(generator, min_iou)
                key = f"{case}/{variant}"
                best[key] = min(best.get(key, np.inf), seconds)
                ious[key] = iou
    reference = {case: ious[f"{case}/float32"] for case in ("default", "zero")} if "float32" in generators else {}
    row = {"model": name, "image": source, "prompts": args.prompts, "load": os.getloadavg()[0],
           "ms_per_prompt": {k: round(1000 * v / args.prompts, 2) for k, v in best.items()},
           "passing_default": int((ious.get("default/float32", torch.zeros(1, 1)) > 0.88).any(1).sum()),
           "best_iou_quantiles_0_25_50_75_100": [round(float(q), 4) for q in np.quantile(
               ious["zero/float32"].max(1).values.numpy(), [0, 0.25, 0.5, 0.75, 1])] if "float32" in generators else None,
           "max_iou_diff_vs_float32": {k: float((v - reference[k.split("/")[0]]).abs().max())
                                       for k, v in ious.items() if k.split("/")[0] in reference}}
    print(json.dumps(row))
    if args.torch_profile and "float32" in generators:
        from torch.profiler import ProfilerActivity, profile

        for case, min_iou in (("default", 0.88), ("zero", None)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run(generators["float32"], min_iou)
            print(f"-- float32, {case} thresholds, {args.prompts} prompts, one thread")
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
