"""The version lives in one place (geoalps/__init__.py); the plugin's metadata and the CLI agree."""
from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import geoalps

REPO = Path(__file__).resolve().parents[2]
METADATA = REPO / "plugins" / "qgis" / "geoalps_processing" / "metadata.txt"


def test_version_agrees_everywhere():
    plugin = configparser.ConfigParser()
    plugin.read(METADATA, encoding="utf-8")
    script = Path(sys.executable).with_name("geoalps")  # the console script of this environment
    command = [str(script)] if script.exists() else [sys.executable, "-m", "geoalps"]
    done = subprocess.run([*command, "--version"], capture_output=True, text=True, check=True)
    said = re.search(r"version\s+(\S+)", done.stdout).group(1)
    assert geoalps.__version__ == plugin["general"]["version"] == said


def test_pyproject_reads_the_version_from_the_package():
    text = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text
    assert 'version = {attr = "geoalps.__version__"}' in text
    assert not re.search(r'^version\s*=\s*"', text, re.MULTILINE)  # no second copy
