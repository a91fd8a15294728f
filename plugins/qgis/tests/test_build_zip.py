"""The installable zip: one top-level plugin folder, no caches, and QGIS loads it from a profile."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import PLUGIN_DIR

sys.path.insert(0, str(PLUGIN_DIR))
import build_zip  # noqa: E402


def test_zip_has_one_plugin_folder_and_no_caches(tmp_path):
    (build_zip.PLUGIN / "__pycache__").mkdir(exist_ok=True)  # present after any test run
    target = build_zip.build_zip(tmp_path)
    assert target.name == f"geoalps_processing-{build_zip.plugin_version()}.zip"
    names = zipfile.ZipFile(target).namelist()
    assert {name.split("/")[0] for name in names} == {"geoalps_processing"}
    assert "geoalps_processing/metadata.txt" in names
    assert "geoalps_processing/algorithms/autolabel.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert build_zip.build_zip(tmp_path).read_bytes() == target.read_bytes()  # reproducible


def test_metadata_declares_a_processing_provider():
    text = (build_zip.PLUGIN / "metadata.txt").read_text()
    assert "hasProcessingProvider=yes" in text
    assert "qgisMinimumVersion=3.22" in text


def test_qgis_process_loads_the_plugin_installed_from_the_zip(tmp_path):
    qgis_process = "/usr/bin/qgis_process.bin"
    if not os.access(qgis_process, os.X_OK):
        pytest.skip("qgis_process.bin not installed")
    target = build_zip.build_zip(tmp_path / "dist")
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(target).extractall(plugins)  # what "Install from ZIP" does
    ini = profile / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\ngeoalps_processing=true\n")
    env = {k: v for k, v in os.environ.items() if k != "QGIS_PLUGINPATH"}
    env.update({"QGIS_CUSTOM_CONFIG_PATH": str(profile), "QT_QPA_PLATFORM": "offscreen"})
    done = subprocess.run(
        [qgis_process, "list"], env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "geoalps:autolabel" in done.stdout
