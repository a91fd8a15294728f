"""How close a whole tile comes to the encoder alone (geoalps issue 28): SAM 2 and SAM generators.

One process, one model, one 1024 px tile (the aerial mosaic of benchmarks/sam_amg); each
repetition times, one after the other (interleaved, so the shared CPU's load hits all alike):
the encoder alone, then a whole tile with the baseline decoder (``--baseline-decoder``, a copy of
another commit's ``geoalps/engines/sam/decoder.py``, e.g. main's, decoding batch after batch as
main does: ``decoder_threads=1``), with this tree's defaults (float32, batches decoded in
threads), and with the opt-ins ``decoder_dtype="bfloat16"`` and ``"bfloat16-screen"`` (bf16 IoU
screen, float32 for prompts near or above the IoU threshold; the same as float32 when the
threshold is 0, so not run then; ``--screen-margin`` overrides its margin). The fastest
repetition of each is reported (wall seconds; also the process's CPU seconds, all threads,
``cpu_tile_over_encoder``, which the load of a shared machine moves less), with that
repetition's breakdown (rows before 2026-12-06 17:40 carry the last repetition's), and the masks of
every variant are matched against this tree's
float32 masks (IoU >= 0.99 and >= 0.9, both ways; counts).

    $ git show main:geoalps/engines/sam/decoder.py > /tmp/main_decoder.py
    $ nice -n 10 .venv/bin/python benchmarks/sam2_amg/floor.py hiera_tiny --baseline-decoder /tmp/main_decoder.py
    $ nice -n 10 .venv/bin/python benchmarks/sam2_amg/floor.py vit_b --baseline-decoder /tmp/main_decoder.py

Models have random weights (hiera_tiny: the decoder gains of benchmarks/sam2_amg, so thresholds 0
give many distinct masks; vit_b: plain, as benchmarks/sam_amg's speed rows). Rows go to
benchmarks/sam2_amg/results.jsonl (hiera) or benchmarks/sam_amg/results.jsonl (vit_b), with the
commit measured.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from geoalps.engines.sam.generators import FastMaskGenerator  # noqa: E402
from geoalps.engines.sam2.generators import Sam2FastMaskGenerator  # noqa: E402


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench2 = _load("sam2_amg_bench", HERE / "bench.py")  # random_model(); its sam_amg: aerial_tile(), dense_masks()
sam_amg = bench2.sam_amg


def baseline_generator(generator_class, decoder_path: Path):
    """``generator_class`` with the decoder of another commit (its ``PointPromptDecoder``)."""
    base = _load("baseline_decoder", decoder_path).PointPromptDecoder

    class BaselineDecoder(base):
        def _parts(self, model):
            if hasattr(model, "sam_mask_decoder"):
                decoder = model.sam_mask_decoder
                prefix = [decoder.obj_score_token.weight] if decoder.pred_obj_scores else []
                return model.sam_prompt_encoder, decoder, prefix
            return model.prompt_encoder, model.mask_decoder, []

        def set_embedding(self, features):
            if isinstance(features, dict):
                skip = features["high_res_feats"] if self.decoder.use_high_res_features else None
                return base.set_embedding(self, features["image_embed"], skip)
            return base.set_embedding(self, features)

    class Baseline(generator_class):
        def _make_decoder(self, dtype=torch.float32):
            return BaselineDecoder(self.model)

    return Baseline


def best_ious(a, b) -> np.ndarray:
    """For each mask of ``a`` (a ``SamMasks``), its best IoU with a mask of ``b`` (two empty
    masks: 1). Exact, on the masks' box crops: only pairs whose boxes meet are compared."""
    if len(a) == 0:
        return np.ones(0)
    areas_a = np.array([int(c.sum()) for c in a.crops])
    areas_b = np.array([int(c.sum()) for c in b.crops])
    boxes_b = np.asarray(b.boxes)
    out = np.zeros(len(a))
    for i, (crop, area) in enumerate(zip(a.crops, areas_a)):
        if area == 0:
            out[i] = float((areas_b == 0).any())
            continue
        ax0, ay0, ax1, ay1 = (int(v) for v in a.boxes[i])
        meet = ((boxes_b[:, 0] <= ax1) & (boxes_b[:, 2] >= ax0) & (boxes_b[:, 1] <= ay1)
                & (boxes_b[:, 3] >= ay0) & (areas_b > 0))
        for j in np.flatnonzero(meet):
            bx0, by0, bx1, by1 = (int(v) for v in boxes_b[j])
            x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
            inter = int((crop[y0 - ay0 : y1 - ay0 + 1, x0 - ax0 : x1 - ax0 + 1]
                         & b.crops[j][y0 - by0 : y1 - by0 + 1, x0 - bx0 : x1 - bx0 + 1]).sum())
            out[i] = max(out[i], inter / (area + areas_b[j] - inter))
    return out


def recall(expected, got) -> dict:
    """Share of ``expected``'s masks with a partner in ``got`` at IoU >= 0.99 / 0.9, both ways."""
    ref, back = best_ious(expected, got), best_ious(got, expected)
    share = lambda x, t: round(float((x >= t).mean()), 4) if len(x) else 1.0  # noqa: E731
    nonempty = np.array([c.any() for c in expected.crops], bool)
    return {"masks": len(got), "default_masks": len(expected),
            "recall_099": share(ref, 0.99), "recall_09": share(ref, 0.9),
            "precision_099": share(back, 0.99), "precision_09": share(back, 0.9),
            "recall_099_nonempty": share(ref[nonempty], 0.99), "recall_09_nonempty": share(ref[nonempty], 0.9),
            "default_nonempty": int(nonempty.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["hiera_tiny", "vit_b"])
    parser.add_argument("--baseline-decoder", type=Path, help="another commit's geoalps/engines/sam/decoder.py")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--cases", default="default,zero",
                        help="default (0.88/0.95), zero (thresholds 0), mid (IoU --mid-iou, stability 0)")
    parser.add_argument("--variants", default="float32,bfloat16,bfloat16-screen")
    parser.add_argument("--mid-iou", type=float, default=0.545,
                        help="IoU threshold of the mid case (random hiera_tiny IoUs lie in 0.53-0.55)")
    parser.add_argument("--screen-margin", type=float, help="bfloat16-screen's margin (default: the library's)")
    parser.add_argument("--skip-stability", type=float,
                        help="adds the variant skip: float32 with skip_covered_stability at this value")
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = [line for line in subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                             capture_output=True, text=True).stdout.splitlines()
             if not line.endswith("results.jsonl")]  # rows appended by other runs are no code
    torch.manual_seed(0)
    if args.model == "vit_b":
        from segment_anything import sam_model_registry

        model, model_name, generator, out = (sam_model_registry["vit_b"]().eval(), "vit_b (random)",
                                             FastMaskGenerator, REPO / "benchmarks/sam_amg/results.jsonl")
    else:
        model, model_name = bench2.random_model(args.model)
        generator, out = Sam2FastMaskGenerator, HERE / "results.jsonl"
    tile, source = sam_amg.aerial_tile()
    variants = {name: dict(generator=generator, decoder_dtype=name, decoder_threads=0)
                for name in args.variants.split(",")}
    if args.skip_stability is not None:  # the opt-in prompt skipping, float32 decoder
        variants["skip"] = dict(generator=generator, decoder_dtype="float32", decoder_threads=0,
                                skip_covered_stability=args.skip_stability)
    if args.baseline_decoder:  # the other commit's decoder, batch after batch as before
        variants = {"baseline": dict(generator=baseline_generator(generator, args.baseline_decoder),
                                     decoder_dtype="float32", decoder_threads=1), **variants}
    cases = {"default": {}, "zero": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0),
             "mid": dict(pred_iou_thresh=args.mid_iou, stability_score_thresh=0.0)}
    cases = {k: cases[k] for k in args.cases.split(",")}
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "commit": commit + ("+dirty" if dirty else ""), "model": model_name, "image": source,
            "points_per_side": args.points_per_side, "baseline_decoder": str(args.baseline_decoder or ""),
            "screen_margin": args.screen_margin, "skip_stability": args.skip_stability}
    encoder = generator(model).encoder
    times = {"encoder": []}
    cpu = {}  # CPU seconds of the process (all threads): a shared machine's load moves them less
    results = {}
    loads = []
    for rep in range(args.reps):
        loads.append(os.getloadavg()[0])
        with torch.inference_mode():
            t0, c0 = time.perf_counter(), time.process_time()
            list(encoder.encode_all([tile]))  # both engines' encoders have encode_all
            times["encoder"].append(time.perf_counter() - t0)
            cpu.setdefault("encoder", []).append(time.process_time() - c0)
        print(f"rep {rep} encoder {times['encoder'][-1]:.2f} s", flush=True)
        for case, thresholds in cases.items():
            for name, variant in variants.items():
                if name == "bfloat16-screen" and not thresholds.get("pred_iou_thresh", 1.0):
                    continue  # no IoU filter, no screen: the float32 path
                extra = {k: v for k, v in variant.items() if k not in ("generator", "decoder_dtype", "decoder_threads")}
                gen = variant["generator"](model, points_per_side=args.points_per_side,
                                           decoder_dtype=variant["decoder_dtype"],
                                           decoder_threads=variant["decoder_threads"], **extra, **thresholds)
                if args.screen_margin is not None:
                    gen.screen_margin = args.screen_margin
                t0, c0 = time.perf_counter(), time.process_time()
                result = gen.generate(tile)
                seconds = time.perf_counter() - t0
                key = f"{case}/{name}"
                if seconds < min(times.get(key, [float("inf")])):  # the row's breakdown is the fastest rep's
                    results[key] = result
                cpu.setdefault(key, []).append(time.process_time() - c0)
                times.setdefault(key, []).append(seconds)
                print(f"rep {rep} {key} {seconds:.2f} s {len(result)} masks "
                      f"{ {k: round(v, 2) for k, v in result.timings.items()} }", flush=True)
    loads.append(os.getloadavg()[0])
    encoder_s = min(times["encoder"])
    rows = []
    for case, thresholds in cases.items():
        for name in variants:
            key = f"{case}/{name}"
            if key not in times:
                continue
            label = {"zero": "thresholds 0", "default": "default thresholds",
                     "mid": f"IoU threshold {args.mid_iou}, stability 0"}[case]
            row = {**meta, "case": f"{args.model} 1024 {args.points_per_side}x{args.points_per_side} "
                   f"{label}, decoder {name}",
                   "settings": thresholds, "load": [round(min(loads), 1), round(max(loads), 1)],
                   "encoder_s": round(encoder_s, 2), "tile_s": round(min(times[key]), 2),
                   "tile_over_encoder": round(min(times[key]) / encoder_s, 2),
                   "cpu_s": {"encoder": round(min(cpu["encoder"]), 2), "tile": round(min(cpu[key]), 2)},
                   "cpu_tile_over_encoder": round(min(cpu[key]) / min(cpu["encoder"]), 2),
                   "all_s": {"encoder": [round(t, 2) for t in times["encoder"]],
                             "tile": [round(t, 2) for t in times[key]]},
                   "breakdown_s": {k: round(v, 2) for k, v in results[key].timings.items()},
                   "masks": len(results[key]),
                   "vs_float32": None if name == "float32" else recall(results[f"{case}/float32"], results[key])}
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
