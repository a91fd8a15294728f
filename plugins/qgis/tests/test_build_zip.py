"""The installable zip: one top-level plugin folder, no caches, the QGIS plugin repository's rules,
the geoalps wheel inside, and QGIS loads it from a profile."""
from __future__ import annotations

import configparser
import io
import os
import re
import subprocess
import sys
import zipfile
from urllib.parse import urlparse

import pytest

from conftest import PLUGIN_DIR

sys.path.insert(0, str(PLUGIN_DIR))
import build_zip  # noqa: E402

# What plugins.qgis.org's upload validator (QGIS-Django plugins/validator.py) rejects a zip for.
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                     "email", "repository", "tracker", "homepage", "icon")
MAX_UPLOAD_BYTES = 25_000_000
FORBIDDEN_DIRS = {"__MACOSX", ".git", "__pycache__"}
PLACEHOLDER_URLS = {"http://bugs", "http://repo", "http://homepage"}


def _metadata(archive: zipfile.ZipFile, folder: str) -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keys are case-sensitive there (qgisMinimumVersion)
    parser.read_string(archive.read(f"{folder}/metadata.txt").decode("utf-8"))
    return dict(parser.items("general"))


def test_zip_has_one_plugin_folder_and_no_caches(tmp_path, built_wheel):
    (build_zip.PLUGIN / "__pycache__").mkdir(exist_ok=True)  # present after any test run
    target = build_zip.build_zip(tmp_path, wheel=built_wheel)
    assert target.name == f"geoalps_processing-{build_zip.plugin_version()}.zip"
    names = zipfile.ZipFile(target).namelist()
    assert {name.split("/")[0] for name in names} == {"geoalps_processing"}
    assert "geoalps_processing/metadata.txt" in names
    for module in ("autolabel", "predict", "classgallery", "nameclasses", "evaluate", "install"):
        assert f"geoalps_processing/algorithms/{module}.py" in names
    assert "geoalps_processing/installer.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert build_zip.build_zip(tmp_path, wheel=built_wheel).read_bytes() == target.read_bytes()  # reproducible


def test_zip_passes_the_plugin_repository_rules(plugin_zip):
    assert plugin_zip.stat().st_size <= MAX_UPLOAD_BYTES
    archive = zipfile.ZipFile(plugin_zip)
    assert archive.testzip() is None
    names = archive.namelist()
    for name in names:
        assert ".." not in name and not name.startswith("/"), name
        assert ".pyc" not in name, name
        assert not FORBIDDEN_DIRS & set(name.split("/")), name
    folders = {name.split("/")[0] for name in names}
    assert len(folders) == 1
    folder = folders.pop()
    assert re.match(r"^[A-Za-z][A-Za-z0-9-_]+$", folder)
    for required in ("__init__.py", "metadata.txt", "LICENSE"):
        assert f"{folder}/{required}" in names, required
    assert "MIT License" in archive.read(f"{folder}/LICENSE").decode()

    metadata = _metadata(archive, folder)
    missing = [key for key in REQUIRED_METADATA if not metadata.get(key, "").strip()]
    assert not missing, f"metadata.txt lacks {missing}"
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", metadata["version"]), metadata["version"]
    minimum = metadata["qgisMinimumVersion"]
    assert re.fullmatch(r"3\.\d+(\.\d+)?", minimum) and tuple(map(int, minimum.split(".")))[:2] >= (3, 22)
    assert f"{folder}/{metadata['icon']}" in names
    assert "/" not in metadata["author"]
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", metadata["email"])
    for key in ("homepage", "repository", "tracker"):
        url = urlparse(metadata[key])
        assert url.scheme == "https" and url.netloc and metadata[key] not in PLACEHOLDER_URLS, key
    for flag in ("experimental", "deprecated"):
        assert metadata[flag].lower() in ("true", "false"), flag
    assert metadata["hasProcessingProvider"] == "yes"
    assert "pip install geoalps" not in metadata["about"]  # geoalps is not on PyPI
    assert "Install or update geoalps" in metadata["about"]


def test_zip_carries_the_geoalps_wheel_of_the_same_version(plugin_zip):
    archive = zipfile.ZipFile(plugin_zip)
    version = _metadata(archive, "geoalps_processing")["version"]
    wheels = [n for n in archive.namelist() if n.startswith("geoalps_processing/wheels/")]
    assert wheels == [f"geoalps_processing/wheels/geoalps-{version}-py3-none-any.whl"]
    wheel = zipfile.ZipFile(io.BytesIO(archive.read(wheels[0])))
    inside = wheel.namelist()
    assert "geoalps/__init__.py" in inside and "geoalps/cli/__init__.py" in inside
    assert not [n for n in inside if n.endswith(".pyc")]
    meta = wheel.read(f"geoalps-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in meta
    assert "License-Expression: MIT" in meta
    entry_points = wheel.read(f"geoalps-{version}.dist-info/entry_points.txt").decode()
    assert "geoalps = geoalps.cli:main" in entry_points


def test_metadata_declares_a_processing_provider():
    text = (build_zip.PLUGIN / "metadata.txt").read_text()
    assert "hasProcessingProvider=yes" in text
    assert "qgisMinimumVersion=3.22" in text


def test_qgis_process_loads_the_plugin_installed_from_the_zip(tmp_path, plugin_zip):
    qgis_process = "/usr/bin/qgis_process.bin"
    if not os.access(qgis_process, os.X_OK):
        pytest.skip("qgis_process.bin not installed")
    profile = tmp_path / "profile"
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(plugin_zip).extractall(plugins)  # what "Install from ZIP" does
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
    assert "geoalps:installgeoalps" in done.stdout
