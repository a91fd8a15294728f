"""The whole new-user path, for real: the plugin installed from its zip into a temporary profile,
``geoalps:installgeoalps`` (torch "none") builds the private environment from a system Python and
installs the wheel the zip carries from the package registry, then ``geoalps:autolabel`` runs
through it with no GEOALPS_CLI and no geoalps (or anything else) on the PATH.

Both steps are separate ``qgis_process.bin`` runs, as a user's later session would be, so the
second also proves the provider setting was saved in the profile. About 2 minutes here (pip
fetches the core dependencies, about 0.8 GB installed); the output is checked with sqlite3.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import zipfile

import pytest

from conftest import REPO

QGIS_PROCESS = "/usr/bin/qgis_process.bin"
SCENE = REPO / "sample_data" / "scene_rgb_u8.tif"
#: Where the installer may look for a system Python (no geoalps there: checked below).
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def _run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _results(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads(done.stdout[done.stdout.index("{"):])["results"]


@pytest.mark.slow
def test_install_then_autolabel_through_the_private_environment(tmp_path, plugin_zip):
    if not os.access(QGIS_PROCESS, os.X_OK):
        pytest.skip(f"{QGIS_PROCESS} not installed")
    if not SCENE.is_file():
        pytest.skip(f"{SCENE} missing")
    assert shutil.which("geoalps", path=SYSTEM_PATH) is None, "a geoalps on the system PATH spoils this test"

    config = tmp_path / "qgis-config"
    profile = config / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(plugin_zip).extractall(plugins)  # what "Install from ZIP" does
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngeoalps_processing=true\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEOALPS_CLI", "QGIS_PLUGINPATH", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update({"QGIS_CUSTOM_CONFIG_PATH": str(config), "QT_QPA_PLATFORM": "offscreen",
                "PATH": SYSTEM_PATH})

    started = time.monotonic()
    done = _run(["--json", "run", "geoalps:installgeoalps", "--", "TORCH=0"], env, timeout=1200)
    install_s = time.monotonic() - started
    print(f"install algorithm (torch none) took {install_s:.0f} s")
    results = _results(done)
    venv = profile / "geoalps" / "venv"
    cli = venv / "bin" / "geoalps"
    assert results["GEOALPS_CLI"] == str(cli)
    assert results["VERSION"] == zipfile.ZipFile(plugin_zip).read(
        "geoalps_processing/metadata.txt").decode().split("version=")[1].split()[0]
    assert "Successfully installed" in done.stdout  # pip's lines came through the feedback
    cfg = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    base = cfg.get("executable") or cfg["home"]
    assert "qgis" not in base.lower() and os.path.dirname(base) in SYSTEM_PATH.split(":")  # a system Python
    assert f"Configuration\\GEOALPS_CLI={cli}" in ini.read_text()  # the provider setting, saved in the profile
    assert not list(venv.glob("lib/python3*/site-packages/torch"))  # "none": no torch

    scene = tmp_path / SCENE.name  # a copy: QGIS may write .aux.xml beside what it opens
    shutil.copy(SCENE, scene)
    output = tmp_path / "labels.gpkg"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env["PATH"] = str(empty)  # nothing on the PATH: the saved setting alone finds geoalps
    started = time.monotonic()
    done = _run(["--json", "run", "geoalps:autolabel", "--",
                 f"INPUT={scene}", "ENGINE=2", "CLASSES=4", "TILE_SIZE=512", "OVERLAP=64",
                 f"OUTPUT={output}"], env, timeout=600)
    label_s = time.monotonic() - started
    print(f"autolabel through the installed environment took {label_s:.0f} s")
    results = _results(done)
    assert str(cli) in done.stdout  # the command line the log shows

    con = sqlite3.connect(output)
    try:
        n_features = con.execute("SELECT count(*) FROM masks").fetchone()[0]
        geometry = con.execute(
            "SELECT geometry_type_name FROM gpkg_geometry_columns WHERE table_name = 'masks'"
        ).fetchone()[0]
    finally:
        con.close()
    assert n_features > 0
    assert geometry.upper() in ("POLYGON", "MULTIPOLYGON")
    assert results["FEATURE_COUNT"] == n_features
