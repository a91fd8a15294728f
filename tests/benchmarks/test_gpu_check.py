"""benchmarks/gpu/check.py --quick: the GPU check's own code, run on the CPU so it does not rot.

One subprocess runs the whole check as the device would (about 1.5 minutes on 2 busy cores); the test
then reads its JSON report: every section present and run on the CPU, finite training losses,
bf16-vs-float32 SAM masks counted and matched, and the CPU-vs-CPU label and predict comparisons
exact (the GPU tolerances only matter on the GPU).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "benchmarks" / "gpu" / "check.py"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu_check")
    out = folder / "report.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, str(CHECK), "--quick", "--out", str(out), "--work", str(folder / "work")],
        capture_output=True, text=True, timeout=600, cwd=folder, env=env,
    )
    assert proc.stdout.strip(), f"no report on stdout; stderr:\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report  # the --out copy is the printed report
    return proc.returncode, report, proc.stderr


def test_every_section_is_present_and_ran_on_the_cpu(quick_report):
    returncode, report, stderr = quick_report
    assert report["mode"] == "quick" and report["complete"] is True
    for name in ("sam", "sam2", "label", "train", "predict"):
        section = report[name]
        assert section["device"] == "cpu", name
        assert "error" not in section, f"{name}: {section.get('error')}"
        assert section["ok"] is True, (name, section)
    assert report["ok"] is True and report["failed"] == []
    assert returncode == 0, stderr[-3000:]


def _assert_split(split: dict) -> None:
    """Issue 28's split: encoder alone and whole tiles at default thresholds and at 0."""
    assert split["encoder_s"] > 0 and split["points_per_side"] == 8
    for case in ("default", "zero"):
        figures = split[case]
        assert figures["tile_s"] > 0
        # both sides rounded (ratio to 0.01, seconds to 1 ms): a relative tolerance
        assert figures["tile_over_encoder"] == pytest.approx(figures["tile_s"] / split["encoder_s"], rel=0.01)
        assert set(figures["breakdown_s"]) == {"encoder", "decoder", "postprocess"}
    assert split["zero"]["masks"] > 0


def test_sam2_reports_the_whole_tile_against_the_encoder(quick_report):
    sam2 = quick_report[1]["sam2"]
    if "skipped" in sam2:
        pytest.skip(sam2["skipped"])
    assert sam2["tile_px"] == 256
    _assert_split(sam2)


def test_sam_reports_the_whole_tile_against_the_encoder(quick_report):
    _assert_split(quick_report[1]["sam"]["split"])


def test_sam_reports_bf16_against_float32_and_speeds(quick_report):
    sam = quick_report[1]["sam"]
    masks = sam["bf16_vs_fp32"]
    assert masks["bf16_masks"] > 0 and masks["fp32_masks"] > 0
    assert masks["count_diff"] == masks["bf16_masks"] - masks["fp32_masks"]
    assert 0 < masks["matched"] <= min(masks["bf16_masks"], masks["fp32_masks"])
    assert 0.0 <= masks["min_matched_iou"] <= masks["mean_matched_iou"] <= 1.0
    assert set(sam["encoder"]["images_per_s"]) == {"1", "2"}
    assert all(v > 0 for v in sam["encoder"]["images_per_s"].values())
    assert sam["auto_tile_batch"] == 1  # the auto rule on the CPU
    assert sam["amg"]["tiles_per_s"] > 0 and sam["amg"]["tile_batch"] == 1
    assert sam["peak_gpu_memory_gib"] is None


def test_training_losses_are_finite(quick_report):
    train = quick_report[1]["train"]
    tiny = train["models"]["tiny"]
    assert len(tiny["losses"]) == tiny["steps"] == 2
    assert tiny["finite_losses"] is True and all(math.isfinite(v) for v in tiny["losses"])
    assert tiny["images_per_s"] > 0


def test_training_throughput_and_one_process_data_parallel(quick_report):
    """Issue 27: images/s in float32 and bf16, plain and compiled (eager backend on the CPU), and
    torchrun with one process naming its backend and device in its first line."""
    train = quick_report[1]["train"]
    rates = train["throughput"]
    assert (rates["model"], rates["input_px"], rates["compile_backend"]) == ("tiny", 64, "eager")
    for name in ("float32", "bf16", "float32_compile", "bf16_compile"):
        assert "error" not in rates[name], (name, rates[name])
        assert rates[name]["images_per_s"] > 0 and rates[name]["finite_losses"] is True, name
    for name in ("bf16", "float32_compile", "bf16_compile"):
        assert rates[name]["speedup_vs_float32"] == pytest.approx(
            rates[name]["images_per_s"] / rates["float32"]["images_per_s"], rel=0.01)
    parallel = train["data_parallel"]
    assert parallel["ok"] is True, parallel
    assert parallel["first_line"] == "data-parallel on 1 process, gloo, cpu"
    assert parallel["returncode"] == 0 and parallel["checkpoint_written"] is True


def test_cpu_against_cpu_label_and_predict_are_equal(quick_report):
    report = quick_report[1]
    label = report["label"]
    runs = label["runs"]
    assert runs["device"]["device"] == runs["cpu"]["device"] == "cpu"
    assert runs["cpu"]["polygons"] > 0
    assert runs["device"]["polygons"] == runs["cpu"]["polygons"]
    assert label["count_diff_frac"] == 0.0 and label["passed"] is True
    predict = report["predict"]
    assert predict["equal_share"] == 1.0 and predict["same_nodata"] is True and predict["passed"] is True
    assert predict["pixels"] > 0
