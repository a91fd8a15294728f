"""Fixtures for the plugin tests: a headless QGIS with the provider, a fake geoalps, the real one.

Runs under Debian's python3 (or a --system-site-packages venv made from it); see
scripts/test_qgis.sh. Never import geoalps, torch or the geo wheels here: this is the QGIS side.
"""
from __future__ import annotations

import gc
import os
import stat
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
qgis_core = pytest.importorskip("qgis.core", reason="PyQGIS not installed")

REPO = Path(__file__).resolve().parents[3]
PLUGIN_DIR = REPO / "plugins" / "qgis"
PROCESSING_PLUGINS = Path("/usr/share/qgis/python/plugins")
for _path in (PROCESSING_PLUGINS, PLUGIN_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# The real geoalps the end-to-end tests drive (tests change GEOALPS_CLI, so capture it first).
REAL_CLI = os.environ.get("GEOALPS_CLI") or str(REPO / ".venv" / "bin" / "geoalps")
SAMPLE_SCENE = Path(
    os.environ.get("GEOALPS_SAMPLE_SCENE") or REPO / "sample_data" / "scene_rgbn_u16.tif"
)
FAKE_CLI_SOURCE = Path(__file__).with_name("fake_geoalps.py")


def require_real_cli() -> str:
    if not os.access(REAL_CLI, os.X_OK):
        pytest.skip(f"geoalps CLI not found at {REAL_CLI} (create .venv or set GEOALPS_CLI)")
    return REAL_CLI


def require_sample_scene() -> Path:
    if not SAMPLE_SCENE.is_file():
        pytest.skip(f"sample scene {SAMPLE_SCENE} missing (run sample_data/make_sample_data.py)")
    return SAMPLE_SCENE


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The geoalps wheel, built once a session (``python -m build``: sdist, then the wheel)."""
    import build_zip

    try:
        build_zip.build_python()
    except SystemExit as exc:
        pytest.skip(str(exc))
    return build_zip.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def plugin_zip(tmp_path_factory, built_wheel) -> Path:
    """The plugin zip as users get it, with the wheel inside."""
    import build_zip

    return build_zip.build_zip(tmp_path_factory.mktemp("zip"), wheel=built_wheel)


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """One QgsApplication for the session, with Processing and the GeoALPS provider."""
    from qgis.core import QgsApplication

    profile = tmp_path_factory.mktemp("qgis-profile")
    app = QgsApplication([], False, str(profile))
    app.initQgis()
    from processing.core.Processing import Processing

    Processing.initialize()
    from geoalps_processing.provider import GeoAlpsProvider

    provider = GeoAlpsProvider()  # referenced until teardown, or its algorithms vanish
    QgsApplication.processingRegistry().addProvider(provider)
    yield app
    from qgis.core import QgsProject

    QgsProject.instance().clear()
    QgsApplication.processingRegistry().removeProvider(provider)
    del provider
    gc.collect()
    app.exitQgis()


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    """A stand-in geoalps executable; set FAKE_GEOALPS_MODE to pick its behaviour.

    It records its argv, pid and environment in ``record.json`` beside itself.
    """
    folder = tmp_path / "fake-env" / "bin"
    folder.mkdir(parents=True)
    script = folder / "geoalps"
    script.write_text("#!/usr/bin/python3\n" + FAKE_CLI_SOURCE.read_text())
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("GEOALPS_CLI", str(script))
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "ok")
    return script


@pytest.fixture(scope="session")
def tiny_raster(tmp_path_factory) -> str:
    """A 32 x 32, 3-band GeoTIFF in EPSG:32633 for the fake-CLI tests (written with QGIS's GDAL)."""
    from osgeo import gdal, osr

    path = str(tmp_path_factory.mktemp("rasters") / "tiny.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(path, 32, 32, 3, gdal.GDT_Byte)
    dataset.SetGeoTransform((500000.0, 1.0, 0.0, 5000000.0, 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    dataset.SetProjection(srs.ExportToWkt())
    for band in range(1, 4):
        dataset.GetRasterBand(band).Fill(band * 40)
    dataset = None
    return path
