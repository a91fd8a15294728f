"""Where the geoalps command is, and whether it really is geoalps.

QGIS's own Python cannot run geoalps (torch and the geo wheels clash with the libraries QGIS
links), and inside qgis_process ``sys.executable`` is not the user's Python either, so the path
is configured explicitly. Order: the ``GEOALPS_CLI`` environment variable (set on purpose for a
run or a script, so it wins), then the provider setting, then the private environment that
"Install or update geoalps" makes under the QGIS profile, then ``geoalps`` on the PATH.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from qgis.core import QgsProcessingException

ENV_VAR = "GEOALPS_CLI"
SETTING_CLI = "GEOALPS_CLI"
PROVIDER_GROUP = "GeoALPS"
VERSION_TIMEOUT_S = 120.0

# Variables that point the child's Python, GDAL or PROJ at QGIS's copies instead of its own.
_STRIPPED_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE")
_STRIPPED_PREFIXES = ("PROJ_", "GDAL_")

_verified: dict[tuple[str, float], str] = {}


#: Where "Install or update geoalps" puts its environment, inside the QGIS profile folder.
PRIVATE_ENV_PARTS = ("geoalps", "venv")


def how_to_set() -> str:
    return (
        "Run Processing Toolbox > GeoALPS > Install or update geoalps, or set the path in "
        f"Processing > Options > Providers > GeoALPS or in the {ENV_VAR} environment variable."
    )


def private_env_dir() -> str:
    """``<QGIS profile>/geoalps/venv``: the environment the install algorithm creates."""
    from qgis.core import QgsApplication

    return os.path.join(QgsApplication.qgisSettingsDirPath(), *PRIVATE_ENV_PARTS)


def env_executable(env_dir: str, name: str) -> str:
    """``bin/<name>`` of a virtual environment (``Scripts\\<name>.exe`` on Windows)."""
    if sys.platform == "win32":
        return os.path.join(env_dir, "Scripts", name + ".exe")
    return os.path.join(env_dir, "bin", name)


def private_env_cli() -> str:
    """The private environment's geoalps command, or ``""`` when it was never installed."""
    path = env_executable(private_env_dir(), "geoalps")
    return path if os.path.isfile(path) else ""


def set_cli_setting(path: str) -> None:
    """Point the provider at ``path`` (saved in the QGIS profile like any Processing option)."""
    from processing.core.ProcessingConfig import ProcessingConfig

    if SETTING_CLI not in ProcessingConfig.settings:  # provider not loaded yet: save it directly
        from qgis.core import QgsSettings

        QgsSettings().setValue(f"Processing/Configuration/{SETTING_CLI}", path)
        return
    ProcessingConfig.setSettingValue(SETTING_CLI, path)


def configured_cli() -> tuple[str, str]:
    """The configured path and where it came from (for messages); ``("", "")`` if none."""
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return from_env, f"the {ENV_VAR} environment variable"
    from_setting = _setting_value()
    if from_setting:
        return from_setting, "the Processing setting"
    private = private_env_cli()
    if private:
        return private, "the environment made by Install or update geoalps"
    on_path = shutil.which("geoalps")
    if on_path:
        return on_path, "the PATH"
    return "", ""


def _setting_value() -> str:
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # Processing plugin not loaded: only the environment variable counts
        return ""
    value = ProcessingConfig.getSetting(SETTING_CLI)
    return str(value).strip() if value else ""


def is_python_interpreter(path: str) -> bool:
    """``python``, ``python3.11``, ``python.exe``...: run it as ``python -m geoalps``."""
    name = re.split(r"[\\/]", path)[-1].lower()  # either separator: a Windows path on any OS
    if name.endswith(".exe"):
        name = name[:-4]
    return name.startswith("python") and not name.startswith("python-config")


def command_prefix(path: str) -> list[str]:
    """The argv that starts geoalps from ``path``."""
    if is_python_interpreter(path):
        return [path, "-m", "geoalps"]
    return [path]


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """QGIS's environment minus what would make the child load QGIS's Python, GDAL or PROJ."""
    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name in _STRIPPED_VARIABLES or name.startswith(_STRIPPED_PREFIXES):
            del env[name]
    env["PYTHONUNBUFFERED"] = "1"  # progress lines arrive as they are printed
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_captured(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run a short command (a version probe) with the clean child environment, output captured
    as text; raises OSError / TimeoutExpired like subprocess.run."""
    return subprocess.run(
        argv, env=child_environment(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        encoding="utf-8", errors="replace", timeout=timeout_s, creationflags=subprocess_flags(),
    )


def subprocess_flags() -> int:
    """No console window popping up on Windows."""
    if sys.platform == "win32":
        return subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
    return 0


def resolve_cli() -> list[str]:
    """The command prefix of a working geoalps, or a QgsProcessingException saying how to fix it.

    Checks once per (path, modification time) that ``--version`` answers as geoalps, so batch
    runs pay for it only once.
    """
    path, source = configured_cli()
    if not path:
        raise QgsProcessingException(
            f"GeoALPS: the geoalps command is not configured and is not on the PATH. {how_to_set()}"
        )
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise QgsProcessingException(
            f"GeoALPS: the geoalps command was not found at '{path}' (from {source}). "
            f"{how_to_set()}"
        )
    if sys.platform != "win32" and not os.access(path, os.X_OK):
        raise QgsProcessingException(
            f"GeoALPS: '{path}' (from {source}) is not executable. {how_to_set()}"
        )
    prefix = command_prefix(path)
    key = (path, os.path.getmtime(path))
    if key not in _verified:
        _verified[key] = _check_version(prefix, path, source)
    return prefix


def _check_version(prefix: list[str], path: str, source: str) -> str:
    try:
        done = run_captured(prefix + ["--version"], VERSION_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QgsProcessingException(
            f"GeoALPS: could not run '{path}' (from {source}): {exc}. {how_to_set()}"
        ) from exc
    said = (done.stdout + done.stderr).strip()
    if done.returncode == 0 and "geoalps" in said.lower():
        return said
    last = said.splitlines()[-1] if said else f"exit code {done.returncode}"
    what = "a Python without the geoalps package" if is_python_interpreter(path) else (
        "not the geoalps command"
    )
    raise QgsProcessingException(
        f"GeoALPS: '{path}' (from {source}) is {what} ('{' '.join(prefix)} --version' said: "
        f"{last}). {how_to_set()}"
    )
