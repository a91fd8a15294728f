"""The wheel and sdist as a user gets them: ``python -m build`` makes both, ``twine check`` passes,
and the wheel installs into a brand-new venv (core dependencies only, with the repository's
constraints file, no torch) where ``geoalps label`` works from a folder with no clone on
``sys.path``, and so does every command that needs no torch (``classes gallery``/``name``,
``evaluate``, ``models list``) on a real scene.

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
    for extra in ("sam", "sam2", "train", "export", "all", "dev"):
        assert f"Provides-Extra: {extra}\n" in metadata
    assert "Requires-Dist: torch" in metadata and "extra ==" in metadata  # torch only in extras

    with tarfile.open(dists["sdist"]) as sdist:
        members = sdist.getnames()
    for needed in ("pyproject.toml", "README.md", "LICENSE", "geoalps/__init__.py"):
        assert f"geoalps-{version}/{needed}" in members, needed


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> dict:
    """A brand-new venv holding the wheel and its core dependencies only (with the repository's
    constraints file), made once for the tests below."""
    started = time.monotonic()
    folder = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", folder], env=_clean_env())
    python = folder / "bin" / "python"
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
          dists["wheel"], "-c", REPO / "constraints.txt"], env=_clean_env())
    return {"folder": folder, "python": python, "cli": folder / "bin" / "geoalps",
            "installed_s": time.monotonic() - started}


def test_wheel_installs_into_a_fresh_venv_and_labels_a_scene(venv, tmp_path):
    started = time.monotonic()
    python, cli = venv["python"], venv["cli"]
    work = tmp_path / "work"  # a folder with no clone in it, so nothing imports from the repo
    work.mkdir()
    where = _run([python, "-c", "import geoalps, sys; print(geoalps.__file__); print(sys.path)"],
                 cwd=work, env=_clean_env()).stdout
    assert str(venv["folder"]) in where.splitlines()[0]
    assert str(REPO) not in where
    no_torch = subprocess.run([python, "-c", "import torch"], cwd=work, env=_clean_env(), capture_output=True)
    assert no_torch.returncode != 0  # core dependencies only

    assert geoalps.__version__ in _run([cli, "--version"], cwd=work, env=_clean_env()).stdout
    _run([cli, "label", SCENE, "-o", "out.gpkg", "--engine", "classical"], cwd=work, env=_clean_env())
    polygons = gpd.read_file(work / "out.gpkg", layer="masks")
    assert len(polygons) > 0
    assert set(polygons.geom_type) <= {"Polygon", "MultiPolygon"}
    assert polygons["pseudo_class"].notna().all()
    print(f"venv + pip install of the wheel: {venv['installed_s']:.0f} s; "
          f"labelling: {time.monotonic() - started:.0f} s")


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_command_without_torch_runs_from_the_core_wheel_on_a_real_scene(venv, tmp_path, realdata):
    """label, classes gallery (PNG and HTML), classes name, evaluate --json --figure and models
    list from the core install alone (no torch in the venv), on a real aerial scene and its
    building mask."""
    import json

    import rasterio

    scene = realdata / "aerial" / "aerial_rgb_030m_1.tif"
    truth = realdata / "aerial" / "aerial_rgb_030m_1.buildings.tif"
    cli, env = venv["cli"], _clean_env()
    work = tmp_path / "work"
    work.mkdir()
    # The venv has no torch, so a command that imported it would fail here.
    assert subprocess.run([venv["python"], "-c", "import torch"], cwd=work, env=env, capture_output=True).returncode
    _run([cli, "label", scene, "-o", "labels.gpkg", "--raster-out", "labels.tif", "--engine", "classical",
          "--classes", "4", "--quiet"], cwd=work, env=env)
    polygons = gpd.read_file(work / "labels.gpkg", layer="masks")
    assert len(polygons) > 0 and polygons["pseudo_class"].between(0, 3).all()
    with rasterio.open(scene) as src, rasterio.open(work / "labels.tif") as labels:
        assert (labels.crs, labels.transform, labels.shape) == (src.crs, src.transform, src.shape)
        assert polygons.crs == src.crs

    for picture in ("gallery.png", "gallery.html"):
        _run([cli, "classes", "gallery", "labels.gpkg", "-o", picture], cwd=work, env=env)
    assert (work / "gallery.png").read_bytes()[:8] == PNG_MAGIC
    page = (work / "gallery.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "data:image/png;base64," in page

    _run([cli, "classes", "name", "labels.gpkg", "--names", "0=roof,1=roof", "-o", "named.gpkg",
          "--report", "naming.json", "--quiet"], cwd=work, env=env)
    named = gpd.read_file(work / "named.gpkg", layer="masks")
    assert len(named) == len(polygons)
    assert set(named.loc[named["pseudo_class"].isin([0, 1]), "class_name"]) <= {"roof"}
    assert json.loads((work / "naming.json").read_text())["merged_names"][0] == "roof"

    _run([cli, "evaluate", "labels.tif", truth, "--json", "scores.json", "--figure", "confusion.png"],
         cwd=work, env=env)
    scores = json.loads((work / "scores.json").read_text())
    for key in ("many_to_one_miou", "hungarian_miou", "pixel_accuracy", "nmi", "contingency"):
        assert key in scores, key
    assert 0.0 <= scores["many_to_one_miou"] <= 1.0 and 0 < scores["valid_pixels"] <= 512 * 512
    assert (work / "confusion.png").read_bytes()[:8] == PNG_MAGIC

    listed = _run([cli, "models", "list", "--dir", work], cwd=work, env=env).stdout
    assert "vit_b  -  not downloaded" in listed and "sam auto: none" in listed
