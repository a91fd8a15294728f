"""The real thing: ``qgis_process.bin run geoalps:autolabel`` with the plugin enabled in a temp profile.

Only a separate qgis_process reproduces the library environment of a real QGIS (its GDAL, PROJ
and Python paths); the output is checked with sqlite3, never with the geo wheels.
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import PLUGIN_DIR, require_real_cli, require_sample_scene

QGIS_PROCESS = "/usr/bin/qgis_process.bin"


@pytest.fixture
def qgis_process_env(tmp_path):
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
        "GEOALPS_CLI": require_real_cli(),
    })
    return env


def run_qgis_process(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=600,
    )


def test_qgis_process_lists_the_provider(qgis_process_env):
    done = run_qgis_process(["list"], qgis_process_env)
    assert done.returncode == 0, done.stderr
    assert "geoalps:autolabel" in done.stdout
    for algorithm in ("predict", "classgallery", "nameclasses", "evaluate"):
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
