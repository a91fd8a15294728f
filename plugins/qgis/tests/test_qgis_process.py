"""The real thing: ``qgis_process.bin run geoalps:autolabel`` with the plugin enabled in a temp profile.

Only a separate qgis_process reproduces the library environment of a real QGIS (its GDAL, PROJ
and Python paths); the output is checked with sqlite3, never with the geo wheels.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PLUGIN_DIR, require_real_cli, require_sample_scene
from helpers import live_group_members, processes_mentioning, read_record

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
#: From Ctrl+C to the child's whole process group gone (issue 23 item 4).
CANCEL_LIMIT_S = 2.0


def _qgis_process_env(tmp_path, cli: str) -> dict:
    if not os.access(QGIS_PROCESS, os.X_OK):
        pytest.skip(f"{QGIS_PROCESS} not installed")
    profile = tmp_path / "profile"
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngeoalps_processing=true\n")
    env = dict(os.environ)
    env.update({
        "QGIS_CUSTOM_CONFIG_PATH": str(profile),
        "QGIS_PLUGINPATH": str(PLUGIN_DIR),
        "QT_QPA_PLATFORM": "offscreen",
        "GEOALPS_CLI": cli,
    })
    return env


@pytest.fixture
def qgis_process_env(tmp_path):
    return _qgis_process_env(tmp_path, require_real_cli())


def run_qgis_process(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=600,
    )


def test_qgis_process_lists_the_provider(qgis_process_env):
    done = run_qgis_process(["list"], qgis_process_env)
    assert done.returncode == 0, done.stderr
    assert "geoalps:autolabel" in done.stdout
    for algorithm in ("predict", "classgallery", "nameclasses", "evaluate", "pretrain", "train"):
        assert f"geoalps:{algorithm}" in done.stdout


def test_qgis_process_autolabel_on_the_sample_scene(qgis_process_env, tmp_path):
    scene = require_sample_scene()
    output = tmp_path / "labels.gpkg"
    started = time.monotonic()
    done = run_qgis_process(
        ["--json", "run", "geoalps:autolabel", "--",
         f"INPUT={scene}", "ENGINE=2", "CLASSES=4", "TILE_SIZE=512", "OVERLAP=64",
         f"OUTPUT={output}"],
        qgis_process_env,
    )
    seconds = time.monotonic() - started
    print(f"qgis_process autolabel took {seconds:.1f} s")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    assert results["OUTPUT"] == str(output)

    con = sqlite3.connect(output)
    try:
        n_features = con.execute("SELECT count(*) FROM masks").fetchone()[0]
        classes = {row[0] for row in con.execute("SELECT DISTINCT pseudo_class FROM masks")}
        srs = con.execute(
            "SELECT s.organization, s.organization_coordsys_id FROM gpkg_geometry_columns g "
            "JOIN gpkg_spatial_ref_sys s ON s.srs_id = g.srs_id WHERE g.table_name = 'masks'"
        ).fetchone()
        styles = con.execute(
            "SELECT count(*) FROM layer_styles WHERE f_table_name = 'masks' AND useAsDefault = 1"
        ).fetchone()[0]
    finally:
        con.close()
    assert n_features > 0
    assert results["FEATURE_COUNT"] == n_features
    assert classes and classes <= set(range(4))
    assert (srs[0].upper(), srs[1]) == ("EPSG", 32633)
    assert styles == 1


def test_qgis_process_evaluate_reads_the_scores_back(qgis_process_env, tmp_path):
    # The truth scored against itself: every headline number is 1, read back from the CLI's JSON.
    truth = require_sample_scene().with_name("scene_rgbn_u16.gt.tif")
    if not truth.is_file():
        pytest.skip(f"{truth} missing")
    scores = tmp_path / "scores.json"
    done = run_qgis_process(
        ["--json", "run", "geoalps:evaluate", "--",
         f"PREDICTION={truth}", f"TRUTH={truth}", "IOU=0.5", f"OUTPUT={scores}"],
        qgis_process_env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    written = json.loads(scores.read_text())
    for name, key in (("MANY_TO_ONE_MIOU", "many_to_one_miou"), ("PIXEL_ACCURACY", "pixel_accuracy"),
                      ("HUNGARIAN_MIOU", "hungarian_miou"), ("NMI", "nmi")):
        assert results[name] == pytest.approx(written[key]) == pytest.approx(1.0), name


def test_qgis_process_trains_a_tiny_model(qgis_process_env, tmp_path):
    # geoalps:train headless: a list of layers, the declared options as qgis_process gives them
    # (enums by index, booleans as words), the real geoalps train behind them.
    scene = require_sample_scene()
    truth = scene.with_name("scene_rgbn_u16.gt.tif")
    if not truth.is_file():
        pytest.skip(f"{truth} missing")
    model = tmp_path / "model.pt"
    done = run_qgis_process(
        ["--json", "run", "geoalps:train", "--", f"IMAGES={scene}", f"LABELS={truth}", "MODEL_SIZE=3",
         "EPOCHS=1", "STEPS_PER_EPOCH=1", "BATCH_SIZE=1", "THREADS=1", "AUGMENT=false", f"OUTPUT={model}"],
        qgis_process_env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    assert results["OUTPUT"] == str(model) and model.stat().st_size > 0
    assert model.with_name("model.metrics.csv").read_text().count("\n") == 2  # header and one epoch


def _wait_for(found, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _ctrl_c(proc: subprocess.Popen, pgid: int) -> tuple[float, float]:
    """SIGINT to qgis_process, as Ctrl+C in a terminal; seconds until the geoalps group ``pgid``
    has gone, and until qgis_process has exited."""
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _wait_for(lambda: not live_group_members(pgid), 30, "the geoalps process group to end")
    group_s = time.monotonic() - sent
    proc.wait(timeout=60)
    return group_s, time.monotonic() - sent


def test_ctrl_c_in_qgis_process_stops_a_silent_geoalps_within_2_s(fake_cli, tiny_raster, tmp_path, monkeypatch):
    # The fake prints nothing for 30 s: the cancel must not wait for a line from it.
    env = {**_qgis_process_env(tmp_path, str(fake_cli)), "FAKE_GEOALPS_MODE": "silent"}
    output = tmp_path / "labels.gpkg"
    proc = subprocess.Popen(
        [QGIS_PROCESS, "run", "geoalps:autolabel", "--", f"INPUT={tiny_raster}", "ENGINE=2", "CLASSES=3",
         "TILE_SIZE=512", "OVERLAP=64", f"OUTPUT={output}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        record_file = Path(fake_cli).parent / "record.json"
        _wait_for(record_file.exists, 120, "the fake geoalps to start")
        record = read_record(fake_cli)
        time.sleep(0.5)
        group_s, exit_s = _ctrl_c(proc, record["pid"])
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    print(f"Ctrl+C: geoalps group gone after {group_s:.2f} s, qgis_process exited after {exit_s:.2f} s")
    assert group_s < CANCEL_LIMIT_S
    assert proc.returncode != 0 and "cancelled" in out, out[-2000:]
    assert not output.exists()


def test_ctrl_c_in_qgis_process_during_the_first_tile_keeps_the_work_folder(qgis_process_env, tmp_path):
    # The real geoalps with its default dask workers: Ctrl+C while the first tiles are labelled.
    scene = require_sample_scene()
    output = tmp_path / "labels.gpkg"
    work = tmp_path / "labels.gpkg.geoalps-work"
    proc = subprocess.Popen(
        [QGIS_PROCESS, "run", "geoalps:autolabel", "--", f"INPUT={scene}", "ENGINE=2", "CLASSES=4",
         "TILE_SIZE=512", "OVERLAP=64", f"OUTPUT={output}"],
        env=qgis_process_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        # run.json is written once the inputs are checked, just before the engine starts
        _wait_for((work / "run.json").exists, 300, "geoalps to start labelling")
        leader = _wait_for(lambda: processes_mentioning(f"-o {output}"), 10, "the geoalps process")[0]
        pgid = os.getpgid(leader)
        time.sleep(1.5)
        members = live_group_members(pgid)
        group_s, exit_s = _ctrl_c(proc, pgid)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    print(f"Ctrl+C with {len(members)} geoalps processes: group gone after {group_s:.2f} s, "
          f"qgis_process exited after {exit_s:.2f} s")
    assert group_s < CANCEL_LIMIT_S
    assert proc.returncode != 0 and "cancelled" in out, out[-2000:]
    assert not output.exists()
    assert (work / "run.json").is_file()  # kept for "Resume an interrupted run"
