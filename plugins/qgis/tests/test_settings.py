"""Finding the geoalps command: environment variable, provider setting, PATH, clear errors."""
from __future__ import annotations

import os

import processing
import pytest
from qgis.core import QgsProcessingException

from conftest import REPO
from geoalps_processing import settings

from test_runner import autolabel_params


@pytest.fixture
def no_cli_configured(monkeypatch, tmp_path):
    from processing.core.ProcessingConfig import ProcessingConfig

    monkeypatch.delenv("GEOALPS_CLI", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    ProcessingConfig.setSettingValue(settings.SETTING_CLI, "")
    yield
    ProcessingConfig.setSettingValue(settings.SETTING_CLI, "")


def test_wrong_environment_path_gives_a_clear_error(qgis_app, tiny_raster, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALPS_CLI", "/x/y/geoalps")
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("geoalps:autolabel", autolabel_params(tiny_raster, tmp_path))
    message = str(raised.value)
    assert "GeoALPS: the geoalps command was not found at '/x/y/geoalps'" in message
    assert "Processing > Options > Providers > GeoALPS" in message
    assert "GEOALPS_CLI environment variable" in message


def test_unset_gives_a_clear_error(qgis_app, no_cli_configured):
    with pytest.raises(QgsProcessingException, match="not configured"):
        settings.resolve_cli()


def test_not_executable(qgis_app, tmp_path, monkeypatch):
    plain = tmp_path / "geoalps"
    plain.write_text("not a program")
    monkeypatch.setenv("GEOALPS_CLI", str(plain))
    with pytest.raises(QgsProcessingException, match="not executable"):
        settings.resolve_cli()


def test_a_program_that_is_not_geoalps(qgis_app, fake_cli, monkeypatch):
    monkeypatch.setenv("FAKE_GEOALPS_MODE", "notgeoalps")
    with pytest.raises(QgsProcessingException, match="is not the geoalps command"):
        settings.resolve_cli()


def test_python_without_geoalps(qgis_app, monkeypatch):
    monkeypatch.setenv("GEOALPS_CLI", "/usr/bin/python3")
    with pytest.raises(QgsProcessingException, match="a Python without the geoalps package"):
        settings.resolve_cli()


def test_python_of_the_geoalps_environment_runs_python_m_geoalps(qgis_app, monkeypatch):
    python = REPO / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"{python} missing")
    monkeypatch.setenv("GEOALPS_CLI", str(python))
    assert settings.resolve_cli() == [str(python), "-m", "geoalps"]


def test_provider_setting_is_used_when_the_variable_is_unset(qgis_app, fake_cli, no_cli_configured):
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.setSettingValue(settings.SETTING_CLI, str(fake_cli))
    assert settings.configured_cli() == (str(fake_cli), "the Processing setting")
    assert settings.resolve_cli() == [str(fake_cli)]


def test_environment_variable_wins_over_the_setting(qgis_app, fake_cli, monkeypatch):
    from processing.core.ProcessingConfig import ProcessingConfig

    ProcessingConfig.setSettingValue(settings.SETTING_CLI, "/usr/bin/python3")
    try:
        assert settings.configured_cli()[0] == str(fake_cli)
    finally:
        ProcessingConfig.setSettingValue(settings.SETTING_CLI, "")


def test_geoalps_on_the_path_is_the_last_resort(qgis_app, fake_cli, no_cli_configured, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_cli.parent))
    assert settings.configured_cli() == (str(fake_cli), "the PATH")


def test_interpreter_detection():
    assert settings.is_python_interpreter("/env/bin/python3.11")
    assert settings.is_python_interpreter(r"C:\env\python.exe")
    assert not settings.is_python_interpreter("/env/bin/geoalps")
    assert settings.command_prefix("/env/bin/python") == ["/env/bin/python", "-m", "geoalps"]


def test_child_environment_strips_only_what_it_must():
    env = settings.child_environment(
        {"PYTHONPATH": "a", "PYTHONHOME": "b", "GDAL_DATA": "c", "PROJ_LIB": "d", "HOME": "/root",
         "PATH": "/usr/bin"}
    )
    assert env["HOME"] == "/root" and env["PATH"] == "/usr/bin"
    assert not {"PYTHONPATH", "PYTHONHOME", "GDAL_DATA", "PROJ_LIB"} & set(env)
