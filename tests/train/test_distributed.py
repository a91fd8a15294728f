"""Data-parallel training (geoalps.train.distributed) on CPU with gloo: 2 processes started here on
127.0.0.1 with torchrun's variables, a tiny model, a few steps.

- the first step's gradients, averaged over the 2 processes, equal one process's on the union
  of both batches;
- ``geoalps pretrain`` on 2 processes: first line, losses fall, one checkpoint, rank 1 silent;
- a rank killed mid-run ends the other with one error line within --timeout, and the 2-process
  resume file then finishes in 1 process;
- ``geoalps predict`` on 2 processes writes the raster one process writes.
"""
from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from floats import assert_float32_close
from train.train_scenes import class_pattern, write_labels, write_scene
from train.train_scenes import _train_test_environment, trained  # noqa: F401 - fixtures used by name

HERE = Path(__file__).parent
TINY = ["--model", "tiny", "--batch-size", "4", "--lr", "2e-3", "--threads", "1", "--seed", "3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ranks(args: list[str], tmp_path: Path, world: int = 2) -> list[subprocess.Popen]:
    """``world`` processes of ``python ARGS`` with the variables torchrun gives its workers."""
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                   LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(HERE.parent.parent), str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
        procs.append(subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def _finish(procs: list[subprocess.Popen], timeout_s: float = 240) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a data-parallel process hung")
        out.append((p.returncode, err))
    return out


@pytest.fixture
def scene(tmp_path):
    classes = class_pattern(128, 150, seed=4)
    # nodata=None: every pixel is valid, so each rank's mean loss is over the same pixel count
    # and the average of the two means is the mean over the union.
    return write_scene(tmp_path / "s.tif", classes, nodata=None), write_labels(tmp_path / "s.labels.tif", classes, nodata=None)


def test_averaged_gradients_equal_one_process_on_both_batches(tmp_path, scene, monkeypatch):
    from train.ddp_worker import gradient_options, without_random_drops
    from geoalps.train import loop

    image, labels = scene
    results = _finish(_start_ranks([str(HERE / "ddp_worker.py"), str(image), str(labels), "grads"], tmp_path))
    assert all(code == 0 for code, _ in results), results
    ranks = [torch.load(tmp_path / f"grads.rank{r}.pt", weights_only=True) for r in range(2)]
    # each rank drew its own tiles (seeded with the run seed and its rank)
    assert not torch.equal(ranks[0]["image"], ranks[1]["image"])
    # DDP leaves the same averaged gradients on both ranks
    assert ranks[0]["grads"].keys() == ranks[1]["grads"].keys()
    for name, grad in ranks[0]["grads"].items():
        assert torch.equal(grad, ranks[1]["grads"][name]), name

    # one process, same seed (same initial weights), on the union of both batches
    jobs = []
    monkeypatch.setattr(loop, "_fit", lambda job: jobs.append(job) or [])
    loop.pretrain([image], [labels], tmp_path / "one.pt", size="tiny", options=gradient_options())
    run = loop._set_up(jobs[0])
    without_random_drops(run.model)
    union = {"image": torch.cat([r["image"] for r in ranks]), "mask": torch.cat([r["mask"] for r in ranks])}
    loop._backward(run, union)
    one = {name: p.grad for name, p in run.model.named_parameters() if p.grad is not None}
    assert one.keys() == ranks[0]["grads"].keys() and len(one) > 20
    flat = torch.cat([g.flatten() for g in one.values()])
    assert_float32_close(torch.cat([ranks[0]["grads"][n].flatten() for n in one]), flat)
    # ... which one rank's own batch alone does not give (the test can fail)
    loop._backward(run, {k: v[: len(v) // 2] for k, v in union.items()})
    alone = torch.cat([p.grad.flatten() for name, p in run.model.named_parameters() if name in one])
    assert not np.allclose(alone.numpy(), flat.numpy(), rtol=0, atol=1e-3 * float(flat.abs().max()))


def _losses(metrics: Path) -> list[float]:
    with open(metrics) as fh:
        return [float(row["train_loss"]) for row in csv.DictReader(fh)]


def test_pretrain_on_two_processes(tmp_path, scene):
    image, labels = scene
    args = ["-m", "geoalps", "pretrain", "--images", str(image), "--labels", str(labels), "-o", "ddp.pt",
            "--epochs", "3", "--steps-per-epoch", "6", "--progress-lines", *TINY]
    (code0, err0), (code1, err1) = _finish(_start_ranks(args, tmp_path))
    assert (code0, code1) == (0, 0), err0 + err1
    assert err0.splitlines()[0] == "data-parallel on 2 processes, gloo, cpu"
    assert "geoalps-progress:" in err0 and "wrote ddp.pt" in err0
    assert err1.strip() == "", err1  # only rank 0 prints
    losses = _losses(tmp_path / "ddp.metrics.csv")
    assert len(losses) == 3 and losses[-1] < 0.9 * losses[0], losses
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp")) == ["ddp.metrics.csv", "ddp.pt"]
    from geoalps.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "ddp.pt")
    assert ckpt["training"]["processes"] == 2 and "resume" not in ckpt


def test_killed_rank_ends_the_run_with_one_error_and_the_resume_file_finishes_in_one_process(tmp_path, scene):
    from geoalps.train.checkpoint import load_checkpoint, resume_path
    from geoalps.errors import DistributedError

    image, labels = scene
    args = ["-m", "geoalps", "pretrain", "--images", str(image), "--labels", str(labels), "-o", "m.pt",
            "--epochs", "3", "--steps-per-epoch", "40", "--timeout", "60", "-q", *TINY]
    procs = _start_ranks(args, tmp_path)
    last = resume_path(tmp_path / "m.pt")
    deadline = time.time() + 240
    while not last.exists():  # epoch 1 done (written atomically by rank 0)
        assert time.time() < deadline and procs[0].poll() is None, procs[0].communicate()
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    (code0, err0), _ = _finish(procs, timeout_s=120)
    assert time.time() - killed < 60 + 10  # within --timeout, no hang
    assert code0 == DistributedError.exit_code, err0
    lines = err0.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoalps: error: data-parallel rank 0 of 2"), err0
    assert "another process failed" in lines[0]
    assert not (tmp_path / "m.pt").exists()
    saved = load_checkpoint(last)["resume"]
    assert saved["epoch"] == 1 and saved["world_size"] == 2 and len(saved["rank_rngs"]) == 2

    # the 2-process resume file continues in one process (no torchrun variables)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, *args, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "data-parallel" not in done.stderr
    ckpt = load_checkpoint(tmp_path / "m.pt")
    history = ckpt["training"]["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3] and ckpt["training"]["processes"] == 1
    assert not last.exists()


def test_predict_on_two_processes_writes_what_one_process_writes(tmp_path, trained):
    model, image, _, _, _ = trained
    one = tmp_path / "one.tif"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])
    # batch 5 over 12 windows: rounds of 10, the last one leaves rank 1 without a window
    common = ["predict", str(model), str(image), "--batch-size", "5", "--threads", "1"]
    done = subprocess.run([sys.executable, "-m", "geoalps", *common, "-o", str(one), "-q"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (code0, err0), (code1, err1) = _finish(_start_ranks(["-m", "geoalps", *common, "-o", "two.tif", "--progress-lines"],
                                                        tmp_path))
    assert (code0, code1) == (0, 0), err0 + err1
    assert err0.splitlines()[0] == "data-parallel on 2 processes, gloo, cpu" and err1.strip() == ""
    with rasterio.open(one) as a, rasterio.open(tmp_path / "two.tif") as b:
        assert a.profile == b.profile and np.array_equal(a.read(), b.read())
    written = {stem: sorted(p.suffix for p in tmp_path.iterdir() if p.stem == stem) for stem in ("one", "two")}
    assert written["one"] == written["two"]  # the raster and its style sidecar, written once


def test_a_hanging_rank_ends_the_run_after_the_timeout(tmp_path, scene):
    from geoalps.train.checkpoint import resume_path
    from geoalps.errors import DistributedError

    image, labels = scene
    args = ["-m", "geoalps", "pretrain", "--images", str(image), "--labels", str(labels), "-o", "h.pt",
            "--epochs", "3", "--steps-per-epoch", "40", "--timeout", "5", "-q", *TINY]
    procs = _start_ranks(args, tmp_path)
    try:
        deadline = time.time() + 240
        while not resume_path(tmp_path / "h.pt").exists():
            assert time.time() < deadline and procs[0].poll() is None, procs[0].communicate()
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGSTOP)  # alive but silent: its sockets stay open
        stopped = time.time()
        try:
            _, err0 = procs[0].communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("rank 0 waited for the stopped rank past --timeout")
        assert time.time() - stopped < 5 + 60
        assert procs[0].returncode == DistributedError.exit_code, err0
        assert err0.strip().count("\n") == 0 and "did not answer within --timeout 5 s" in err0
    finally:
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()


def test_same_command_and_process_count_give_the_same_model(tmp_path, scene):
    from geoalps.train.checkpoint import load_checkpoint

    image, labels = scene
    weights = []
    for name in ("a.pt", "b.pt"):
        args = ["-m", "geoalps", "pretrain", "--images", str(image), "--labels", str(labels), "-o", name,
                "--epochs", "1", "--steps-per-epoch", "4", "-q", *TINY]
        results = _finish(_start_ranks(args, tmp_path))
        assert all(code == 0 for code, _ in results), results
        weights.append(load_checkpoint(tmp_path / name)["model"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


_MARK_TEARDOWN = """
import atexit, sys
from pathlib import Path
atexit.register(Path(sys.argv.pop(1)).touch)  # runs only in the interpreter's normal teardown
from geoalps.cli import main
sys.argv[0] = "geoalps"
main()
"""


def test_a_process_that_joined_a_group_ends_without_the_interpreter_teardown(tmp_path, trained):
    """gloo's transport threads can abort a finished worker in that teardown (C++ terminate, exit
    -6, seen in CI after "wrote two.tif"), which torchrun reports as a failed run: the command
    leaves such a process with os._exit once its outputs are closed. A plain run tears down as usual."""
    model, image, _, _, _ = trained
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])
    group = dict(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                 LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    outputs = {}
    for name, run_env in (("plain", env), ("group", group)):
        done = subprocess.run([sys.executable, "-c", _MARK_TEARDOWN, str(tmp_path / f"{name}.teardown"), "predict",
                               str(model), str(image), "--threads", "1", "-o", str(tmp_path / f"{name}.tif"), "-q"],
                              env=run_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            outputs[name] = src.read()
    assert (tmp_path / "plain.teardown").exists() and not (tmp_path / "group.teardown").exists()
    assert np.array_equal(outputs["plain"], outputs["group"])  # complete before leaving
