"""Fault injection: a run killed at any point, a full disk, two runs on one output. Each is
followed by the documented recovery (``--resume``, or the same command again) and must give
exactly the output of an undisturbed run: the same polygons and the same label raster.

The runs are real ``geoalps label`` processes. Kills come from a small wrapper that patches one
function of geoalps to ``SIGKILL`` its own process at a chosen point (after some tiles, in pass
2, during the final write), so the points are exact rather than timed.
"""
from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import random_boxes, scene_with_objects, write_raster

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, record locks and rlimits")

#: Runs ``geoalps`` with one function patched: argv[1] says where the process kills itself.
KILLER = r"""
import faulthandler, os, signal, sys, time
faulthandler.dump_traceback_later(270)  # a run stuck past the test's 300 s says where (stderr)
point = sys.argv.pop(1)
import geoalps.labelling.run as run
import geoalps.outputs.vector as vector

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point.startswith("tile"):  # after N tiles saved to the work folder
    limit, saved, real = int(point[4:]), [], run._save_tile
    def save(*args):
        real(*args)
        saved.append(1)
        if len(saved) >= limit:
            die()
    run._save_tile = save
elif point == "assembly":  # pass 2: objects of the scene on their way into the output
    real_assemble = run.assemble_scene
    def assemble(*args, **kwargs):
        for frame in real_assemble(*args, **kwargs):
            yield frame
            die()
    run.assemble_scene = assemble
elif point == "final":  # the output and the label raster written under temporary names, not renamed
    vector._write_style = die
elif point.startswith("hold:"):  # a run that holds its lock until the file named after "hold:" exists
    release, real_hold = point[5:], run._save_tile
    def hold(*args):
        deadline = time.monotonic() + 240
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.05)
        real_hold(*args)
    run._save_tile = hold
from geoalps.cli import main
sys.argv[0] = "geoalps"
main()
"""

LABEL = ["--engine", "classical", "--tile-size", "256", "--classes", "4", "-q"]


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


def geoalps(*args, cwd, point: str | None = None, preexec_fn=None, wait: bool = True):
    command = [sys.executable, "-c", KILLER, point] if point else [sys.executable, "-m", "geoalps"]
    process = subprocess.Popen([*command, *map(str, args)], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn, start_new_session=True)
    if not wait:
        return process
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # say where the run stood (faulthandler); never hang the suite
        os.killpg(process.pid, signal.SIGKILL)  # with its dask workers, which hold the pipes too
        out, err = process.communicate(timeout=60)
        pytest.fail(f"geoalps {' '.join(map(str, args))} ran past 300 s; its stderr:\n{err[-6000:]}")
    process.stdout_text, process.stderr_text = out, err
    return process


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A 512 px scene (9 tiles) and the outputs of an undisturbed run on it."""
    folder = tmp_path_factory.mktemp("baseline")
    write_raster(folder / "scene.tif", scene_with_objects(512, 512, random_boxes(14, 512, seed=3), seed=3))
    done = geoalps("label", "scene.tif", "-o", "out.gpkg", "--raster-out", "out.tif", *LABEL, "--keep-work",
                   cwd=folder)
    assert done.returncode == 0, done.stderr_text
    return folder


def _same_result(folder: Path, baseline: Path) -> None:
    """Polygons (geometry, class, every attribute) and the label raster equal the baseline's."""
    import geopandas as gpd

    got, want = (gpd.read_file(f / "out.gpkg", layer="masks") for f in (folder, baseline))
    assert len(got) == len(want) > 10
    assert list(got.columns) == list(want.columns)
    assert got.geometry.geom_equals_exact(want.geometry, tolerance=0).all()
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    with rasterio.open(folder / "out.tif") as a, rasterio.open(baseline / "out.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        assert np.array_equal(a.read(), b.read())


def _copy_scene(baseline: Path, folder: Path) -> None:
    (folder / "scene.tif").write_bytes((baseline / "scene.tif").read_bytes())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith("-work"))


@pytest.mark.parametrize("point", ["tile2", "assembly", "final"])
def test_kill_9_then_resume_gives_the_undisturbed_output(baseline, tmp_path, point):
    _copy_scene(baseline, tmp_path)
    args = ["label", "scene.tif", "-o", "out.gpkg", "--raster-out", "out.tif", *LABEL]
    killed = geoalps(*args, cwd=tmp_path, point=point)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "out.gpkg").exists() and not (tmp_path / "out.tif").exists()
    if point == "final":  # temporaries of the final write are left behind by the kill ...
        left = [p.name for p in tmp_path.iterdir() if ".tmp." in p.name]
        assert any(n.endswith(".tmp.gpkg") for n in left) and any(n.endswith(".tmp.tif") for n in left), left
        # ... as would be the journal of a transaction cut short; someone else's file is not ours
        (tmp_path / ".out.abcd_123.tmp.gpkg-journal").write_bytes(b"\0" * 512)
    (tmp_path / ".outline.abcd_123.tmp.gpkg").write_bytes(b"not geoalps's")
    resumed = geoalps(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr_text
    _same_result(tmp_path, baseline)
    assert _leftovers(tmp_path) == [".outline.abcd_123.tmp.gpkg"]  # no work folder, temp or lock file


@pytest.mark.parametrize("where", ["pass 2", "final write"])
def test_disk_full_is_an_output_error_and_resume_finishes(baseline, tmp_path, where):
    """A file size limit (RLIMIT_FSIZE) stands in for a full disk: writes fail with EFBIG. Pass 2
    streams the objects straight into the output: at a quarter of its size the run fails while
    they are written, at three quarters at the end of the final write."""
    _copy_scene(baseline, tmp_path)
    args = ["label", "scene.tif", "-o", "out.gpkg", "--raster-out", "out.tif", *LABEL]
    size = (baseline / "out.gpkg").stat().st_size
    cap = size // 4 if where == "pass 2" else 3 * size // 4

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    full = geoalps(*args, cwd=tmp_path, preexec_fn=limit)
    assert full.returncode == 4, full.stderr_text
    lines = full.stderr_text.strip().splitlines()
    assert len(lines) == 1 and "writing failed" in lines[0] and "--resume" in lines[0], lines
    assert lines[0].startswith("geoalps: error: out.gpkg:")
    assert "internal error" not in full.stderr_text
    assert not (tmp_path / "out.gpkg").exists()
    resumed = geoalps(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr_text
    _same_result(tmp_path, baseline)
    assert _leftovers(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_two_runs_on_one_output_one_is_refused(baseline, tmp_path, flag):
    _copy_scene(baseline, tmp_path)
    args = ["label", "scene.tif", "-o", "out.gpkg", "--raster-out", "out.tif", *LABEL]
    if flag == "--resume":  # an interrupted run to resume
        assert geoalps(*args, cwd=tmp_path, point="tile2").returncode == -signal.SIGKILL
    release = tmp_path.parent / f"{tmp_path.name}.release"
    first = geoalps(*args, flag, cwd=tmp_path, point=f"hold:{release}", wait=False)
    lock = tmp_path / ".out.gpkg.geoalps-lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = geoalps(*args, flag, cwd=tmp_path)  # while the first one waits at its first tile
    release.touch()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 10, second.stderr_text
    assert second.stderr_text.strip() == (f"geoalps: error: out.gpkg: in use by process {first.pid} "
                                          "(another geoalps run); wait for it to finish")
    _same_result(tmp_path, baseline)
    assert _leftovers(tmp_path) == []


def test_a_lock_left_by_a_dead_process_is_not_in_the_way(baseline, tmp_path):
    _copy_scene(baseline, tmp_path)
    (tmp_path / ".out.gpkg.geoalps-lock").write_text("999999999")
    done = geoalps("label", "scene.tif", "-o", "out.gpkg", "--raster-out", "out.tif", *LABEL, cwd=tmp_path)
    assert done.returncode == 0, done.stderr_text
    _same_result(tmp_path, baseline)


HOLD_WAL = r"""
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("CREATE TABLE qgis_edits (x INTEGER)")
db.execute("INSERT INTO qgis_edits VALUES (1)")
print("ready", flush=True)
sys.stdin.readline()
db.close()
"""


def test_overwrite_refuses_a_geopackage_open_with_a_write_ahead_log(baseline, tmp_path):
    """QGIS editing the output keeps changes in out.gpkg-wal: a new file renamed beside that log
    would be read back with the old log (integrity_check fails). Refuse while it is open."""
    _copy_scene(baseline, tmp_path)
    (tmp_path / "out.gpkg").write_bytes((baseline / "out.gpkg").read_bytes())
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WAL, str(tmp_path / "out.gpkg")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert (tmp_path / "out.gpkg-wal").stat().st_size > 0
        refused = geoalps("label", "scene.tif", "-o", "out.gpkg", *LABEL, "--overwrite", cwd=tmp_path)
        assert refused.returncode == 10, refused.stderr_text
        assert "out.gpkg: open in another program" in refused.stderr_text
        assert len(refused.stderr_text.strip().splitlines()) == 1
    finally:
        holder.communicate("\n", timeout=60)
    db = sqlite3.connect(tmp_path / "out.gpkg")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM qgis_edits").fetchone() == (1,)  # the other program's edit kept
    db.close()
    # once the other program is closed, --overwrite replaces the file
    done = geoalps("label", "scene.tif", "-o", "out.gpkg", "--raster-out", "out.tif", *LABEL, "--overwrite",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr_text
    _same_result(tmp_path, baseline)
