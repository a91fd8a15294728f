"""Install or update geoalps, with a fake system Python and a fake pip: which Python it picks,
what it says when there is none, what pip is asked, that pip's lines reach the log, cancel kills
pip, that the provider is pointed at the new environment, and the optional SAM 2 steps. The real run is test_install_real.py.
"""
from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import processing
import pytest
from qgis.core import QgsProcessingException

from geoalps_processing import installer, settings
from helpers import RecordingFeedback, process_gone

FAKE_PYTHON_SOURCE = Path(__file__).with_name("fake_python.py")


def _fake_python(folder: Path, name: str = "python3") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text("#!/usr/bin/python3\n" + FAKE_PYTHON_SOURCE.read_text())
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    """A PATH holding only a fake ``python3``; a fake wheel; the calls logged to ``calls.jsonl``."""
    from processing.core.ProcessingConfig import ProcessingConfig

    bin_dir = tmp_path / "bin"
    python = _fake_python(bin_dir)
    wheel = tmp_path / "geoalps-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_PY_LOG", str(log))
    monkeypatch.delenv("GEOALPS_CLI", raising=False)
    monkeypatch.delenv(installer.PYTHON_ENV_VAR, raising=False)
    # (scripts/setup.sh exports SAM2_BUILD_CUDA: the sam2 step must set it itself)
    for name in ("FAKE_PY_VERSION", "FAKE_PY_IMPL", "FAKE_PIP_MODE", "FAKE_PIP_ONLY_FOR", "SAM2_BUILD_CUDA",
                 "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    previous = ProcessingConfig.getSetting(settings.SETTING_CLI)
    yield {"python": python, "wheel": wheel, "log": log, "env": tmp_path / "env", "bin": bin_dir}
    ProcessingConfig.setSettingValue(settings.SETTING_CLI, previous or "")


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _params(fake: dict, torch: int = 0, **extra) -> dict:
    params = {"TORCH": torch, "SAM2": False, "PYTHON": "", "WHEEL": str(fake["wheel"]), "TARGET": str(fake["env"]),
              "TORCH_INDEX_URL": "", "PIP_ARGS": ""}
    params.update(extra)
    return params


def test_install_makes_the_environment_streams_pip_and_points_the_provider(qgis_app, fake_system):
    from processing.core.ProcessingConfig import ProcessingConfig

    feedback = RecordingFeedback()
    result = processing.run("geoalps:installgeoalps", _params(fake_system), feedback=feedback)
    cli = str(fake_system["env"] / "bin" / "geoalps")
    assert result == {"GEOALPS_CLI": cli, "VERSION": "0.1.0"}
    assert ProcessingConfig.getSetting(settings.SETTING_CLI) == cli
    assert settings.configured_cli() == (cli, "the Processing setting")

    calls = [c["args"] for c in _calls(fake_system["log"]) if c["args"][:2] != ["-I", "-c"]]
    assert calls[0] == ["-m", "venv", str(fake_system["env"])]
    assert calls[1][:4] == ["-m", "pip", "install", "--upgrade"] and calls[1][-1] == "pip"
    # torch "none": the bare wheel, no torch index, no extras
    assert calls[2][-1] == str(fake_system["wheel"])
    assert not [a for a in calls[2] if "index-url" in a]
    assert len(calls) == 3
    # pip's lines reach the log one by one, and the progress text follows them
    assert "Collecting numpy" in feedback.console
    assert "Successfully installed geoalps-0.1.0 numpy-2.4.0" in feedback.console
    assert any(t.startswith("Installing collected packages") for t in feedback.texts)
    assert feedback.progress == sorted(feedback.progress) and feedback.progress[-1] == 100.0
    assert any("pip install" in c for c in feedback.commands)


def test_cpu_torch_comes_from_the_torch_index_then_the_wheel_with_all_extras(qgis_app, fake_system):
    processing.run("geoalps:installgeoalps", _params(fake_system, torch=1, PIP_ARGS="--proxy http://p:3128"),
                   feedback=RecordingFeedback())
    calls = [c["args"] for c in _calls(fake_system["log"]) if c["args"][:2] == ["-m", "pip"]]
    torch_call, geoalps_call = calls[1], calls[2]
    at = torch_call.index("--index-url")
    assert torch_call[at + 1] == installer.TORCH_INDEX_URLS["cpu"]
    assert "torch" in torch_call and "torchvision" in torch_call
    assert f"{fake_system['wheel']}[sam,train]" in geoalps_call
    assert "--index-url" not in geoalps_call
    for call in calls:
        assert call[-2:] == ["--proxy", "http://p:3128"]
    # SAM 2 is off by default: no sam2 step, no build tools, no sam2 build variables
    assert len(calls) == 3
    assert not [a for call in calls for a in call if a.startswith(("sam2", "setuptools")) or "isolation" in a]
    assert not [c for c in _calls(fake_system["log"]) if "SAM2_BUILD_CUDA" in c["env"]]


def _pip_calls(log: Path) -> list[dict]:
    return [c for c in _calls(log) if c["args"][:2] == ["-m", "pip"]]


def test_sam2_is_built_after_the_wheel_against_the_environments_torch(qgis_app, fake_system):
    from processing.core.ProcessingConfig import ProcessingConfig

    feedback = RecordingFeedback()
    result = processing.run("geoalps:installgeoalps",
                            _params(fake_system, torch=1, SAM2=True, PIP_ARGS="--proxy http://p:3128"),
                            feedback=feedback)
    cli = str(fake_system["env"] / "bin" / "geoalps")
    assert result == {"GEOALPS_CLI": cli, "VERSION": "0.1.0"}
    assert ProcessingConfig.getSetting(settings.SETTING_CLI) == cli
    calls = _pip_calls(fake_system["log"])
    # pip, torch, the wheel, then the build tools and sam2: last, in steps of their own
    assert [c["args"][-3] for c in calls] == ["pip", "torchvision", f"{fake_system['wheel']}[sam,train]",
                                              "wheel", f"sam2=={installer.SAM2_VERSION}"]
    tools, sam2 = calls[3]["args"], calls[4]["args"]
    assert installer.SAM2_VERSION == "1.1.0"
    assert "setuptools>=61" in tools and "wheel" in tools
    # built without isolation (against the torch installed before; no second torch), no upgrade,
    # nothing from the torch index, no constraint file: torch and torchvision stay as they are
    assert "--no-build-isolation" in sam2 and "--upgrade" not in sam2 and "--index-url" not in sam2
    assert not [a for a in sam2 if a in ("torch", "torchvision") or a.startswith("-c")]
    assert all(c["args"][-2:] == ["--proxy", "http://p:3128"] for c in calls)
    # SAM2_BUILD_CUDA=0 for the sam2 steps only; no PIP_CONSTRAINT anywhere
    assert [c["env"].get("SAM2_BUILD_CUDA") for c in calls] == [None, None, None, "0", "0"]
    assert not [c for c in calls if "PIP_CONSTRAINT" in c["env"]]
    # the log shows the command as one could run it, the progress text names the step
    assert any(c.startswith("SAM2_BUILD_CUDA=0 ") and "--no-build-isolation" in c for c in feedback.commands)
    assert f"SAM 2: building sam2 {installer.SAM2_VERSION}" in feedback.texts
    assert feedback.progress == sorted(feedback.progress) and feedback.progress[-1] == 100.0
    assert not feedback.errors
    assert any("installed with SAM 2 (sam2 1.1.0)" in i for i in feedback.infos)


def test_sam2_with_torch_none_is_refused_before_anything_runs(qgis_app, fake_system):
    from qgis.core import QgsApplication, QgsProcessingContext

    with pytest.raises(QgsProcessingException, match="SAM 2 runs on torch: choose torch CPU or CUDA"):
        processing.run("geoalps:installgeoalps", _params(fake_system, torch=0, SAM2=True),
                       feedback=RecordingFeedback())
    assert _calls(fake_system["log"]) == [] and not fake_system["env"].exists()
    alg = QgsApplication.processingRegistry().createAlgorithmById("geoalps:installgeoalps")
    context = QgsProcessingContext()
    from geoalps_processing.algorithms.install import SAM2_NEEDS_TORCH

    assert alg.checkParameterValues(_params(fake_system, torch=0, SAM2=True), context) == (False, SAM2_NEEDS_TORCH)
    assert alg.checkParameterValues(_params(fake_system, torch=1, SAM2=True), context)[0]
    assert alg.checkParameterValues(_params(fake_system, torch=0), context)[0]
    # a caller that skips the check (alg.run does) meets the same refusal in processAlgorithm
    feedback = RecordingFeedback()
    _, ok = alg.run(_params(fake_system, torch=0, SAM2=True), context, feedback)
    assert not ok and any("SAM 2 runs on torch" in e for e in feedback.errors)
    assert _calls(fake_system["log"]) == [] and not fake_system["env"].exists()


@pytest.mark.parametrize("failing, attempted", [("sam2==", 5), ("setuptools>=61", 4)])
def test_a_failing_sam2_step_is_reported_and_geoalps_is_still_used(qgis_app, fake_system, monkeypatch,
                                                                    failing, attempted):
    from processing.core.ProcessingConfig import ProcessingConfig

    monkeypatch.setenv("FAKE_PIP_MODE", "buildfail")
    monkeypatch.setenv("FAKE_PIP_ONLY_FOR", failing)
    feedback = RecordingFeedback()
    result = processing.run("geoalps:installgeoalps", _params(fake_system, torch=2, SAM2=True),
                            feedback=feedback)
    cli = str(fake_system["env"] / "bin" / "geoalps")
    assert result == {"GEOALPS_CLI": cli, "VERSION": "0.1.0"}
    assert ProcessingConfig.getSetting(settings.SETTING_CLI) == cli
    assert len(_pip_calls(fake_system["log"])) == attempted  # a failed build-tools step stops there
    assert len(feedback.errors) == 1
    first, *rest = feedback.errors[0].splitlines()
    assert first.startswith("GeoALPS: SAM 2 could not be installed;") and "sam and classical" in first
    assert "pip failed with exit code 1" in feedback.errors[0]
    assert "ERROR: Failed building wheel for sam2" in rest  # pip's own error, as the other steps show it
    assert any("installed without SAM 2" in i for i in feedback.infos)
    assert feedback.progress[-1] == 100.0


def test_cancel_during_the_sam2_step_stops_pip_and_says_so(qgis_app, fake_system, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_MODE", "hang")
    monkeypatch.setenv("FAKE_PIP_ONLY_FOR", "sam2==")

    class CancelAtSam2(RecordingFeedback):
        def pushConsoleInfo(self, info: str) -> None:  # noqa: N802
            super().pushConsoleInfo(info)
            if self.texts and self.texts[-1].startswith("SAM 2: building"):
                self.cancel()

    feedback = CancelAtSam2()
    with pytest.raises(QgsProcessingException, match="cancelled; pip was stopped"):
        processing.run("geoalps:installgeoalps", _params(fake_system, torch=1, SAM2=True), feedback=feedback)
    pids = [c["pid"] for c in _pip_calls(fake_system["log"]) if f"sam2=={installer.SAM2_VERSION}" in c["args"]]
    assert pids and all(process_gone(pid) for pid in pids)
    assert not feedback.errors  # a cancel is not reported as a failed SAM 2 install


def test_the_pinned_sam2_is_one_the_sam2_extra_accepts():
    import tomllib

    from conftest import REPO

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = [r for r in extras["sam2"] if r.startswith("sam2")]
    assert len(wanted) == 1 and wanted[0].startswith("sam2>=")
    minimum = tuple(int(v) for v in wanted[0].split(">=")[1].split("."))
    assert tuple(int(v) for v in installer.SAM2_VERSION.split(".")) >= minimum
    assert "sam2" not in installer.TORCH_EXTRA.split(",")


def test_an_existing_environment_is_updated_not_made_again(qgis_app, fake_system):
    processing.run("geoalps:installgeoalps", _params(fake_system), feedback=RecordingFeedback())
    fake_system["log"].unlink()
    processing.run("geoalps:installgeoalps", _params(fake_system, torch=2), feedback=RecordingFeedback())
    calls = [c["args"] for c in _calls(fake_system["log"]) if c["args"][:2] != ["-I", "-c"]]
    assert not [c for c in calls if c[:2] == ["-m", "venv"]]
    assert installer.TORCH_INDEX_URLS["cuda"] in calls[1]


def test_no_python_on_the_path_says_what_to_install(qgis_app, fake_system, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("geoalps:installgeoalps", _params(fake_system), feedback=RecordingFeedback())
    message = str(raised.value)
    assert "no Python 3.10 or newer" in message
    assert "sudo apt install python3 python3-venv" in message
    assert "python.org" in message
    assert not fake_system["env"].exists()


def test_too_old_and_non_cpython_interpreters_are_skipped_with_the_reason(qgis_app, fake_system, monkeypatch):
    monkeypatch.setenv("FAKE_PY_VERSION", "3.8.10")
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("geoalps:installgeoalps", _params(fake_system), feedback=RecordingFeedback())
    assert "Python 3.8.10 is too old" in str(raised.value)
    monkeypatch.setenv("FAKE_PY_VERSION", "3.11.2")
    monkeypatch.setenv("FAKE_PY_IMPL", "PyPy")
    info, why = installer.probe_python(str(fake_system["python"]))
    assert info is None and "not CPython" in why
    info, why = installer.probe_python("/usr/bin/qgis_process.bin")  # QGIS's own sys.executable
    assert info is None


def test_the_newest_python_on_the_path_wins_and_duplicates_are_dropped(qgis_app, fake_system):
    bin_dir = fake_system["bin"]
    _fake_python(bin_dir, "python3.11")
    (bin_dir / "python").symlink_to(bin_dir / "python3")  # the same interpreter twice
    found = installer.candidate_pythons()
    assert [Path(p).name for p in found] == ["python3.11", "python3"]
    assert installer.candidate_pythons("/opt/py/bin/python3.12") == ["/opt/py/bin/python3.12"]


def test_a_missing_bundled_wheel_is_a_clear_error(tmp_path):
    with pytest.raises(installer.InstallError, match="build_zip.py"):
        installer.bundled_wheel(str(tmp_path))
    for version in ("0.9.0", "0.10.0", "0.2.1"):
        (tmp_path / f"geoalps-{version}-py3-none-any.whl").write_bytes(b"")
    assert installer.bundled_wheel(str(tmp_path)).endswith("geoalps-0.10.0-py3-none-any.whl")


def test_pip_failure_shows_pips_error(qgis_app, fake_system, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_MODE", "fail")
    with pytest.raises(QgsProcessingException) as raised:
        processing.run("geoalps:installgeoalps", _params(fake_system), feedback=RecordingFeedback())
    assert "pip failed with exit code 1" in str(raised.value)
    assert "No matching distribution found for torch" in str(raised.value)


def test_cancel_kills_pip(qgis_app, fake_system, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_MODE", "hang")
    class CancelAtPipsFirstLine(RecordingFeedback):
        def pushConsoleInfo(self, info: str) -> None:  # noqa: N802
            super().pushConsoleInfo(info)
            if info.startswith("Collecting"):
                self.cancel()

    feedback = CancelAtPipsFirstLine()
    started = time.monotonic()
    with pytest.raises(QgsProcessingException, match="cancelled; pip was stopped"):
        processing.run("geoalps:installgeoalps", _params(fake_system), feedback=feedback)
    assert time.monotonic() - started < 30  # not the fake pip's 120 s
    pip_pids = [c["pid"] for c in _calls(fake_system["log"]) if c["args"][:2] == ["-m", "pip"]]
    assert pip_pids and all(process_gone(pid) for pid in pip_pids)


def test_the_private_environment_is_used_when_nothing_else_is_configured(qgis_app, tmp_path, monkeypatch):
    from processing.core.ProcessingConfig import ProcessingConfig

    monkeypatch.delenv("GEOALPS_CLI", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    previous = ProcessingConfig.getSetting(settings.SETTING_CLI)
    ProcessingConfig.setSettingValue(settings.SETTING_CLI, "")
    monkeypatch.setattr(settings, "private_env_dir", lambda: str(tmp_path / "venv"))
    try:
        assert settings.configured_cli() == ("", "")
        cli = tmp_path / "venv" / "bin" / "geoalps"
        cli.parent.mkdir(parents=True)
        cli.write_text("#!/bin/sh\necho 'geoalps, version 0.1.0'\n")
        cli.chmod(0o755)
        assert settings.configured_cli() == (str(cli), "the environment made by Install or update geoalps")
    finally:
        ProcessingConfig.setSettingValue(settings.SETTING_CLI, previous or "")


def test_default_environment_is_in_the_profile_folder(qgis_app):
    from qgis.core import QgsApplication

    env_dir = settings.private_env_dir()
    assert env_dir.startswith(QgsApplication.qgisSettingsDirPath())
    assert env_dir.endswith(os.path.join("geoalps", "venv"))


def test_plugin_menu_entry_opens_the_installer(qgis_app, monkeypatch):
    from geoalps_processing.plugin import INSTALL_ALGORITHM, GeoAlpsPlugin
    from qgis.core import QgsApplication

    assert QgsApplication.processingRegistry().algorithmById(INSTALL_ALGORITHM) is not None

    class FakeIface:
        def __init__(self):
            self.menu = []

        def mainWindow(self):  # noqa: N802
            return None

        def addPluginToMenu(self, name, action):  # noqa: N802
            self.menu.append((name, action))

        def removePluginMenu(self, name, action):  # noqa: N802
            self.menu.remove((name, action))

    iface = FakeIface()
    plugin = GeoAlpsPlugin(iface)
    # The session's provider is registered already; a second one with the same id would replace
    # (and on unload delete) it, so the plugin object borrows it and gives it back untouched.
    plugin.provider = QgsApplication.processingRegistry().providerById("geoalps")
    opened = []
    monkeypatch.setattr(processing, "execAlgorithmDialog", lambda alg, params: opened.append(alg))
    plugin.initGui()
    try:
        assert [(name, action.text()) for name, action in iface.menu] == [
            ("&GeoALPS", "Install or update geoalps…")]
        iface.menu[0][1].trigger()
        assert opened == [INSTALL_ALGORITHM]
    finally:
        plugin.provider = None
        plugin.unload()
    assert iface.menu == []
