"""Scale-out: dask workers and clusters give the same output as one process; interrupted runs
resume; killed workers and failing tiles do not lose finished work."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

from conftest import random_boxes, scene_with_objects, write_raster
from geoalps.errors import ResumeError, TileError
from geoalps import label
from geoalps.errors import GeoAlpsError

BIN = Path(sys.executable).parent
SMALL_TILES = ["--engine", "classical", "--classes", "4", "--tile-size", "128", "--overlap", "16", "--min-area-px", "30"]


@pytest.fixture(scope="module")
def busy_scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("busy")
    return write_raster(folder / "busy.tif", scene_with_objects(768, 768, random_boxes(60, 768), seed=5, bands=4, dtype="uint16"),
                        nodata=0, tiled=True, blockxsize=128, blockysize=128)


@pytest.fixture(scope="module")
def reference(busy_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.gpkg"
    result = cli("label", busy_scene, "-o", out, "-q", *SMALL_TILES)
    assert result.returncode == 0, result.stderr
    return pyogrio.read_dataframe(out, layer="masks")


def cli(*args, **kwargs):
    return subprocess.run([str(BIN / "geoalps"), *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def assert_same(a, b):
    assert len(a) == len(b) > 0
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert all(x.equals_exact(y, 0) for x, y in zip(a.geometry, b.geometry))


def test_two_local_workers_give_the_same_output(busy_scene, reference, tmp_path):
    out = tmp_path / "w2.gpkg"
    result = cli("label", busy_scene, "-o", out, "--workers", "2", *SMALL_TILES)
    assert result.returncode == 0, result.stderr
    assert "2 workers" in result.stderr
    assert_same(reference, pyogrio.read_dataframe(out, layer="masks"))


def test_a_local_cluster_leaves_the_callers_environment_as_it_was(tmp_path, monkeypatch):
    """dask's nanny writes OMP_NUM_THREADS=1 (and the like) into the calling process before
    each worker starts; after label() the caller's environment is what it was, so torch imported
    later in a notebook still gets every core."""
    from geoalps.labelling.parallel import TileRunner

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "7")
    seen_inside = {}
    with TileRunner(2, None) as runner:
        assert runner.distributed
        seen_inside = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    # what dask did meanwhile (a value the caller had set is kept)
    assert seen_inside == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "7"}
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A real dask scheduler and two single-threaded workers on 127.0.0.1, as separate processes."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    # Own process groups: killing one takes its nanny and worker process with it, so no orphaned
    # worker outlives the test and joins a later test's scheduler on a reused port.
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    for i in range(2):
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--no-dashboard", "--name", f"w{i}", "--local-directory", str(tmp_path / f"w{i}")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    from dask.distributed import Client

    deadline = time.time() + 60
    while True:
        try:
            with Client(address, timeout="5s") as client:
                client.wait_for_workers(2, timeout=30)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    yield address, procs
    for proc in procs:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_existing_dask_cluster_gives_the_same_output(busy_scene, reference, dask_cluster, tmp_path):
    address, _ = dask_cluster
    out = tmp_path / "cluster.gpkg"
    result = cli("label", busy_scene, "-o", out, "--scheduler", address, *SMALL_TILES)
    assert result.returncode == 0, result.stderr
    assert f"cluster {address}" in result.stderr
    assert_same(reference, pyogrio.read_dataframe(out, layer="masks"))


def _wait_for_tiles(work: Path, count: int, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        tiles = list((work / "tiles").glob("*.npz")) if (work / "tiles").exists() else []
        if len(tiles) >= count:
            return len(tiles)
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("tiles did not appear in the work folder")


def test_worker_killed_mid_run_loses_nothing(busy_scene, reference, dask_cluster, tmp_path):
    address, procs = dask_cluster
    out = tmp_path / "killed.gpkg"
    proc = subprocess.Popen([str(BIN / "geoalps"), "label", str(busy_scene), "-o", str(out), "--scheduler", address,
                             *SMALL_TILES], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_tiles(Path(f"{out}.geoalps-work"), 8, proc)
    _kill_group(procs[1])  # one worker (with its nanny) dies mid-run
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert_same(reference, pyogrio.read_dataframe(out, layer="masks"))


def test_local_worker_killed_mid_run_is_replaced(busy_scene, reference, tmp_path):
    """A --workers 2 worker process SIGKILLed mid-run: its nanny starts a new one (forked from the
    driver, which by then has threads and a dask client) and the run completes with every tile."""
    import psutil

    out = tmp_path / "local_killed.gpkg"
    proc = subprocess.Popen([str(BIN / "geoalps"), "label", str(busy_scene), "-o", str(out), "--workers", "2",
                             *SMALL_TILES], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_tiles(Path(f"{out}.geoalps-work"), 8, proc)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
               if "resource_tracker" not in " ".join(c.cmdline())]
    assert len(workers) == 2, [w.cmdline() for w in workers]
    workers[0].send_signal(signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert_same(reference, pyogrio.read_dataframe(out, layer="masks"))


def test_kill_9_then_resume_equals_an_uninterrupted_run(busy_scene, reference, tmp_path):
    out = tmp_path / "resumed.gpkg"
    work = Path(f"{out}.geoalps-work")
    proc = subprocess.Popen([str(BIN / "geoalps"), "label", str(busy_scene), "-o", str(out), "-q", *SMALL_TILES],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_tiles(work, 10, proc)
    import psutil

    descendants = psutil.Process(proc.pid).children(recursive=True)  # its dask workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not _still_running(descendants, within_s=20), "a killed run's workers live on"
    assert not out.exists(), "a killed run must not leave an output"
    finished = len(list((work / "tiles").glob("*.npz")))
    assert 10 <= finished < 49
    # without --resume the stale work folder is not silently reused or deleted
    refused = cli("label", busy_scene, "-o", out, "-q", *SMALL_TILES)
    assert refused.returncode == ResumeError.exit_code and "--resume" in refused.stderr
    # resuming with other settings is refused
    changed = cli("label", busy_scene, "-o", out, "-q", "--resume", *SMALL_TILES[:-2], "--min-area-px", "31")
    assert changed.returncode == ResumeError.exit_code and "min_area_px" in changed.stderr
    resumed = cli("label", busy_scene, "-o", out, "--resume", *SMALL_TILES)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {finished} of 49 tiles already done" in resumed.stderr
    assert_same(reference, pyogrio.read_dataframe(out, layer="masks"))
    assert not work.exists(), "a finished run cleans up its work folder"


def _still_running(processes, within_s: float) -> list:
    """Those of ``processes`` (psutil) still running after up to ``within_s`` s; a zombie (ended,
    not yet reaped by whoever adopted it) has ended."""
    import psutil

    deadline = time.monotonic() + within_s
    while True:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


ORPHAN = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
print(worker.stdout.readline().strip(), flush=True)
time.sleep(600)
"""
WORKER = """
from geoalps.labelling.dask_worker import EndWithParent
EndWithParent().setup(None)
import os, time
print(os.getpid(), flush=True)
time.sleep(600)
"""


def test_a_local_worker_ends_when_its_run_is_killed():
    """dask's own guard (a pipe its parent holds) fails when two forked workers inherit each
    other's pipe (a killed run's workers held the test's pipes past 300 s in CI): the plugin
    every local worker gets ends a worker within seconds of its parent's death, on its own."""
    import psutil

    run = subprocess.Popen([sys.executable, "-c", ORPHAN, WORKER], stdout=subprocess.PIPE, text=True,
                           stderr=subprocess.DEVNULL)
    worker = None
    try:
        worker = psutil.Process(int(run.stdout.readline()))
        assert worker.ppid() == run.pid and _still_running([worker], within_s=0) == [worker]
        run.kill()
        run.wait()
        assert not _still_running([worker], within_s=10)
    finally:
        run.kill()
        if worker is not None and _still_running([worker], within_s=0):  # nothing left behind if it failed
            worker.kill()


def test_keep_work(busy_scene, tmp_path):
    out = tmp_path / "kept.gpkg"
    assert cli("label", busy_scene, "-o", out, "-q", "--keep-work", *SMALL_TILES).returncode == 0
    assert len(list(Path(f"{out}.geoalps-work/tiles").glob("*.npz"))) == 49


def test_a_failing_tile_is_reported_and_the_rest_is_kept(tmp_path):
    """One tile's compressed data is corrupt: the other tiles finish, the command names the bad
    tile, exits non-zero and writes no output, and keeps the finished tiles for --resume."""
    path = tmp_path / "partly_corrupt.tif"
    data = scene_with_objects(2048, 2048, random_boxes(30, 2048), seed=2)
    write_raster(path, data, tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8])  # the scene statistics come from overviews, as in real COGs
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset + 10: offset + 400] = os.urandom(390)
    path.write_bytes(bytes(raw))
    out = tmp_path / "o.gpkg"
    result = cli("label", path, "-o", out, "--engine", "classical", "--tile-size", "512", "--overlap", "0", "-q")
    assert result.returncode == TileError.exit_code
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"geoalps: error: {path}: tile s0_r0_c0 (col 0, row 0, 512 x 512 px) failed: cannot read pixels")
    assert "--resume" in line and "Traceback" not in result.stderr
    assert not out.exists()
    kept = {p.stem for p in Path(f"{out}.geoalps-work/tiles").glob("*.npz")}
    assert len(kept) == 15 and "s0_r0_c0" not in kept


def test_dataarray_in_and_out(tmp_path):
    import rioxarray
    import xarray as xr

    path = write_raster(tmp_path / "da.tif", scene_with_objects(200, 240, [(30, 40, 80, 100)], bands=4), nodata=0)
    array = rioxarray.open_rasterio(path, chunks={"x": 128, "y": 128})  # dask-backed
    result = label(array, None, engine="classical", classes=3, quiet=True, return_labels=True)
    gdf, labels = result.gdf, result.labels
    from_path = label(path, None, engine="classical", classes=3, quiet=True).gdf
    assert gdf.drop(columns=["geometry", "scene"]).equals(from_path.drop(columns=["geometry", "scene"]))
    assert isinstance(labels, xr.DataArray) and labels.shape == (200, 240)
    assert labels.rio.crs == array.rio.crs
    assert labels.rio.transform().almost_equals(array.rio.transform(), precision=1e-9)
    assert np.allclose(labels.x, array.x, rtol=0, atol=1e-6) and np.allclose(labels.y, array.y, rtol=0, atol=1e-6)
    assert int(labels.sel(x=array.x[70], y=array.y[55], method="nearest")) != 255  # inside the object
    with pytest.raises(GeoAlpsError, match="no CRS or transform"):
        label(xr.DataArray(np.ones((3, 10, 10)), dims=("band", "y", "x")), None, engine="classical")


WORKER_PROBE = """
import json, os, sys
from geoalps.options import LabelOptions
from geoalps.labelling.parallel import TileRunner
from geoalps.labelling.tile_work import check_engine

def probe():
    from threadpoolctl import threadpool_info
    from geoalps.labelling.tile_work import _ENGINES
    return {"MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "pool_threads": sorted({pool["num_threads"] for pool in threadpool_info()}),
            "engines_loaded": len(_ENGINES), "forked": hasattr(sys, "_geoalps_parent")}

if __name__ == "__main__":
    sys._geoalps_parent = True  # seen in a worker only if it was forked from here
    with TileRunner(workers=2) as runner:
        description, _, batch = runner.on_every_worker(check_engine, LabelOptions(engine="classical").validated())
        print(json.dumps({"description": description, "batch": batch, "workers": list(runner.client.run(probe).values())}))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_local_workers_are_single_threaded_keep_adaptive_malloc_and_have_the_engine_loaded(tmp_path, method):
    """Workers start by fork (fast) or spawn; either way: one BLAS/OpenMP thread each (a forked
    worker inherits pools sized for all cores), no MALLOC_TRIM_THRESHOLD_ (dask's default makes
    glibc map and zero every tile-sized array afresh), the engine loaded before the first tile."""
    import json

    script = tmp_path / "probe.py"
    script.write_text(WORKER_PROBE)
    env = {**os.environ, "GEOALPS_DASK_START": method}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["description"].startswith("classical") and seen["batch"] == 1
    assert len(seen["workers"]) == 2
    for worker in seen["workers"]:
        assert worker == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1", "pool_threads": [1],
                          "engines_loaded": 1, "forked": method == "fork"}


def test_worker_start_method(monkeypatch):
    from geoalps.labelling.parallel import worker_start_method

    monkeypatch.delenv("GEOALPS_DASK_START", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert worker_start_method() == ("fork" if sys.platform.startswith("linux") else "spawn")
    monkeypatch.setitem(sys.modules, "torch", object())  # torch's thread pools and CUDA do not survive fork
    assert worker_start_method() == "spawn"
    monkeypatch.setenv("GEOALPS_DASK_START", "forkserver")
    assert worker_start_method() == "forkserver"
    monkeypatch.setenv("GEOALPS_DASK_START", "threads")
    with pytest.raises(GeoAlpsError, match="GEOALPS_DASK_START"):
        worker_start_method()


def test_an_error_dask_could_not_send_is_still_one_line():
    """dask hands back a worker's InputError as Exception("InputError('...')") when it cannot
    send the error itself; the tile failure still reads as the error's own message."""
    from geoalps.labelling.parallel import _one_line

    assert _one_line(Exception("InputError('/a.tif: cannot read pixels at col 0')")) == "/a.tif: cannot read pixels at col 0"
    assert _one_line(Exception("NotAnError('x')")) == "Exception: NotAnError('x')"
    assert _one_line(ValueError("bad")) == "ValueError: bad"


@pytest.mark.parametrize("address", ["tcp://user:s3cret@127.0.0.1:1", "user:s3cret@127.0.0.1:1"])
def test_a_scheduler_address_with_a_password_is_refused_without_printing_it(tmp_path, address):
    """dask addresses take no user info (dask authenticates with TLS): refused in one line, the
    password redacted, before any work."""
    scene = write_raster(tmp_path / "s.tif", scene_with_objects(64, 64, random_boxes(2, 64), bands=3))
    result = cli("label", scene, "-o", tmp_path / "o.gpkg", "--engine", "classical", "--scheduler", address)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "s3cret" not in line and "***@127.0.0.1:1" in line and line.startswith("geoalps: error: --scheduler ")


def test_a_scheduler_that_cannot_be_reached_is_named_redacted():
    from geoalps.errors import InputError
    from geoalps.labelling.parallel import TileRunner

    with pytest.raises(InputError) as refused:  # dask itself cannot parse user info: ValueError
        with TileRunner(scheduler="tcp://user:s3cret@127.0.0.1:1"):
            pass
    assert str(refused.value).startswith("tcp://***@127.0.0.1:1: cannot connect (")
    assert "s3cret" not in str(refused.value) and "\n" not in str(refused.value)
