"""The wheel and sdist as a user gets them: ``python -m build`` makes both, ``twine check`` passes,
and the wheel installs into a brand-new venv (core dependencies only, with the repository's
constraints file, no torch) where ``geoalps label`` works from a folder with no clone on
``sys.path``.

(No ``__init__.py`` in this folder: a package named ``packaging`` would shadow the library pytest
itself imports.) About 1.5-2 minutes here, most of it pip installing numpy, rasterio, geopandas,
dask... into the new venv.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import geopandas as gpd
import pytest

import geoalps

REPO = Path(__file__).resolve().parents[2]
SCENE = REPO / "sample_data" / "scene_rgb_u8.tif"


def _run(command: list, cwd: Path | None = None, env: dict | None = None, timeout: float = 900):
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _clean_env() -> dict:
    """No PYTHONPATH, no active venv: nothing of the clone or of .venv leaks into the new one."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("build", reason="pip install build (in the dev extra)")
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel built from it: what is in the sdist is enough to build.
    done = _run([sys.executable, "-m", "build", "--outdir", out, REPO], timeout=600)
    wheels, sdists = list(out.glob("geoalps-*.whl")), list(out.glob("geoalps-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "log": done.stdout + done.stderr}


def test_build_prints_no_warnings(dists):
    # "byte-compiling is disabled" only echoes PYTHONDONTWRITEBYTECODE of the calling shell.
    warnings = [line for line in dists["log"].splitlines()
                if "warn" in line.lower() and "byte-compiling is disabled" not in line]
    assert warnings == []


def test_build_makes_a_wheel_and_sdist_that_pass_twine_check(dists):
    pytest.importorskip("twine", reason="pip install twine (in the dev extra)")
    version = geoalps.__version__
    assert dists["wheel"].name == f"geoalps-{version}-py3-none-any.whl"
    assert dists["sdist"].name == f"geoalps-{version}.tar.gz"
    done = _run([sys.executable, "-m", "twine", "check", "--strict", dists["wheel"], dists["sdist"]])
    assert done.stdout.count("PASSED") == 2, done.stdout

    names = zipfile.ZipFile(dists["wheel"]).namelist()
    info = f"geoalps-{version}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    tracked = subprocess.run(["git", "ls-files", "geoalps"], cwd=REPO, capture_output=True, text=True).stdout
    data = [p for p in tracked.split() if not p.endswith(".py")]
    assert [p for p in data if p not in names] == []  # package data travels (none today)
    assert "geoalps/cli/__init__.py" in names and "geoalps/__main__.py" in names
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or n.startswith(("tests/", "plugins/"))]
    metadata = zipfile.ZipFile(dists["wheel"]).read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    for extra in ("sam", "sam2", "train", "all", "dev"):
        assert f"Provides-Extra: {extra}\n" in metadata
    assert "Requires-Dist: torch" in metadata and "extra ==" in metadata  # torch only in extras

    with tarfile.open(dists["sdist"]) as sdist:
        members = sdist.getnames()
    for needed in ("pyproject.toml", "README.md", "LICENSE", "geoalps/__init__.py"):
        assert f"geoalps-{version}/{needed}" in members, needed


def test_wheel_installs_into_a_fresh_venv_and_labels_a_scene(dists, tmp_path):
    started = time.monotonic()
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], env=_clean_env())
    python, cli = venv / "bin" / "python", venv / "bin" / "geoalps"
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
          dists["wheel"], "-c", REPO / "constraints.txt"], env=_clean_env())
    installed_s = time.monotonic() - started

    work = tmp_path / "work"  # a folder with no clone in it, so nothing imports from the repo
    work.mkdir()
    where = _run([python, "-c", "import geoalps, sys; print(geoalps.__file__); print(sys.path)"],
                 cwd=work, env=_clean_env()).stdout
    assert str(venv) in where.splitlines()[0]
    assert str(REPO) not in where
    no_torch = subprocess.run([python, "-c", "import torch"], cwd=work, env=_clean_env(), capture_output=True)
    assert no_torch.returncode != 0  # core dependencies only

    assert geoalps.__version__ in _run([cli, "--version"], cwd=work, env=_clean_env()).stdout
    _run([cli, "label", SCENE, "-o", "out.gpkg", "--engine", "classical"], cwd=work, env=_clean_env())
    polygons = gpd.read_file(work / "out.gpkg", layer="masks")
    assert len(polygons) > 0
    assert set(polygons.geom_type) <= {"Polygon", "MultiPolygon"}
    assert polygons["pseudo_class"].notna().all()
    print(f"venv + pip install of the wheel: {installed_s:.0f} s; "
          f"with labelling: {time.monotonic() - started:.0f} s")
