"""Set geoalps up in a private environment: find a system Python, make a venv, pip-install the wheel.

QGIS's own interpreter is never used as the base: inside ``qgis_process`` ``sys.executable`` is
not a Python at all, and on any platform its Python sees QGIS's GDAL/PROJ. A system CPython 3.10+
from the PATH (or one the user names) gets a venv under the QGIS profile, and the geoalps wheel
shipped in the plugin's ``wheels/`` folder is installed there with the torch the user picked.
Only the standard library and subprocesses: nothing here imports geoalps, torch or the geo wheels.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from .settings import run_captured

MIN_PYTHON = (3, 10)
#: Searched on the PATH in this order (newest first among those torch has wheels for).
PYTHON_NAMES = ("python3.12", "python3.11", "python3.10", "python3", "python")
#: A Python to use instead of searching the PATH (the algorithm's "Python interpreter" wins).
PYTHON_ENV_VAR = "GEOALPS_INSTALL_PYTHON"
PROBE_TIMEOUT_S = 60.0

TORCH_CHOICES = ("none", "cpu", "cuda")
TORCH_LABELS = (
    "None: core only, classical engine (no SAM, no training; smallest download)",
    "CPU: torch for the CPU, with SAM and training",
    "CUDA: torch for NVIDIA GPUs, with SAM and training",
)
#: pip index of the torch builds of each choice (torch and torchvision come from it).
TORCH_INDEX_URLS = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu126",
}
#: The geoalps extras installed with torch: SAM and training. Not sam2 (so not ``all``): it is a
#: source package whose isolated build would fetch another torch into pip's build environment;
#: the "Also install SAM 2" option installs it in a step of its own (``sam2_commands``).
TORCH_EXTRA = "sam,train"
#: The sam2 release the option installs (the pyproject's ``sam2`` extra asks for ``sam2>=1.1``;
#: 1.1.0 is the release verified to build against the environment's torch).
SAM2_VERSION = "1.1.0"
#: What the sam2 build needs from the environment itself, since it runs without isolation.
SAM2_BUILD_TOOLS = ("setuptools>=61", "wheel")
#: The sam2 build's environment: skip its optional CUDA extension (it needs a CUDA compiler and
#: only speeds up one post-processing step on CUDA; sam2 works without it).
SAM2_BUILD_ENV = {"SAM2_BUILD_CUDA": "0"}

WHEELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wheels")
PIP_QUIET_FLAGS = ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]

_PROBE = (
    "import json, platform, sys\n"
    "try:\n"
    "    import venv, ensurepip\n"
    "    ensurepip.version()\n"
    "    has_venv = True\n"
    "except Exception:\n"
    "    has_venv = False\n"
    "print(json.dumps({'version': list(sys.version_info[:3]),"
    " 'implementation': platform.python_implementation(),"
    " 'executable': sys.executable, 'prefix': sys.prefix,"
    " 'base_prefix': getattr(sys, 'base_prefix', sys.prefix), 'venv': has_venv}))\n"
)


class InstallError(Exception):
    """A step failed in a way the user can fix; the message says how."""


@dataclass(frozen=True)
class PythonInfo:
    path: str
    version: tuple[int, int, int]
    implementation: str
    has_venv: bool

    @property
    def version_text(self) -> str:
        return ".".join(str(v) for v in self.version)


def probe_python(path: str) -> tuple[PythonInfo | None, str]:
    """Run ``path`` and ask what it is: ``(info, "")``, or ``(None, why it is unusable)``."""
    try:
        done = run_captured([path, "-I", "-c", _PROBE], PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"could not run it ({exc})"
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        return None, f"it failed ({last[-1] if last else f'exit code {done.returncode}'})"
    try:
        said = json.loads(done.stdout.strip().splitlines()[-1])
        info = PythonInfo(path, tuple(int(v) for v in said["version"]), str(said["implementation"]),
                          bool(said["venv"]))
    except (ValueError, KeyError, IndexError, TypeError):
        return None, "it is not a Python interpreter"
    if info.implementation != "CPython":
        return None, f"{info.implementation} {info.version_text}, not CPython"
    if info.version[:2] < MIN_PYTHON:
        return None, f"Python {info.version_text} is too old"
    if not info.has_venv:
        return None, f"Python {info.version_text} lacks the venv/ensurepip modules"
    return info, ""


def candidate_pythons(explicit: str = "") -> list[str]:
    """``explicit`` (or ``GEOALPS_INSTALL_PYTHON``) alone if given, else the PATH's pythons."""
    chosen = explicit.strip() or os.environ.get(PYTHON_ENV_VAR, "").strip()
    if chosen:
        return [os.path.expanduser(chosen)]
    found, seen = [], set()
    for name in PYTHON_NAMES:
        path = shutil.which(name)
        if not path:
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        found.append(path)
    return found


def find_python(explicit: str = "") -> tuple[PythonInfo, list[str]]:
    """The first usable Python and the notes on those skipped; InstallError when there is none."""
    notes: list[str] = []
    candidates = candidate_pythons(explicit)
    for path in candidates:
        info, why = probe_python(path)
        if info is not None:
            return info, notes
        notes.append(f"{path}: {why}")
    tried = "; ".join(notes) if notes else "no " + "/".join(PYTHON_NAMES) + " on the PATH"
    raise InstallError(
        f"GeoALPS: no Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer with the venv module was "
        f"found to create the geoalps environment ({tried}). {python_install_hint()}"
    )


def python_install_hint() -> str:
    if sys.platform == "win32":
        how = ("install Python 3.12 from https://www.python.org/downloads/ (tick \"Add python.exe "
               "to PATH\")")
    elif sys.platform == "darwin":
        how = "install Python 3.12 from https://www.python.org/downloads/ (or `brew install python@3.12`)"
    else:
        how = ("install it with your package manager, e.g. `sudo apt install python3 python3-venv` "
               "(Debian, Ubuntu) or `sudo dnf install python3` (Fedora), or from "
               "https://www.python.org/downloads/")
    return (f"To fix: {how}, then run Install or update geoalps again; or give the path of a "
            f"Python 3.10+ in its \"Python interpreter\" parameter (or the {PYTHON_ENV_VAR} "
            "environment variable).")


def bundled_wheel(folder: str = WHEELS_DIR) -> str:
    """The newest geoalps wheel in ``folder``; InstallError if there is none."""
    wheels = glob.glob(os.path.join(folder, "geoalps-*.whl"))
    if not wheels:
        raise InstallError(
            f"GeoALPS: no geoalps wheel in {folder}. Install the plugin from a zip made by "
            "plugins/qgis/build_zip.py (it carries the wheel), or give a wheel in the "
            "\"geoalps wheel\" parameter."
        )
    return max(wheels, key=lambda path: _version_key(wheel_version(path)))


def wheel_version(path: str) -> str:
    """``0.1.0`` from ``geoalps-0.1.0-py3-none-any.whl``."""
    parts = os.path.basename(path).split("-")
    return parts[1] if len(parts) >= 2 else ""


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+-]", version))


def torch_index_url(choice: str, override: str = "") -> str:
    if choice == "none":
        return ""
    if choice == "cuda" and sys.platform == "darwin":
        raise InstallError("GeoALPS: there is no CUDA torch for macOS; choose CPU (it uses Apple's GPU "
                           "through MPS where available).")
    return override.strip() or TORCH_INDEX_URLS[choice]


def venv_command(python: str, env_dir: str, clear: bool) -> list[str]:
    return [python, "-m", "venv", *(["--clear"] if clear else []), env_dir]


def pip_upgrade_command(env_python: str, extra: list[str]) -> list[str]:
    return [env_python, "-m", "pip", "install", "--upgrade", *PIP_QUIET_FLAGS, "pip", *extra]


def torch_command(env_python: str, index_url: str, extra: list[str]) -> list[str]:
    """torch and torchvision from the chosen build's index, before geoalps asks for them."""
    return [env_python, "-m", "pip", "install", "--upgrade", *PIP_QUIET_FLAGS,
            "--index-url", index_url, "torch", "torchvision", *extra]


def geoalps_command(env_python: str, wheel: str, choice: str, extra: list[str]) -> list[str]:
    """The wheel (with SAM and training when torch was chosen); other packages from the index."""
    target = wheel if choice == "none" else f"{wheel}[{TORCH_EXTRA}]"
    return [env_python, "-m", "pip", "install", "--upgrade", *PIP_QUIET_FLAGS, target, *extra]


def sam2_commands(env_python: str, extra: list[str]) -> list[list[str]]:
    """The build tools, then sam2 built from its source package against the torch already in the
    environment (run both with ``SAM2_BUILD_ENV``).

    ``--no-build-isolation``: an isolated build would install sam2's build requirement (torch)
    again into a temporary environment, from PyPI rather than the chosen torch index: GBs, and a
    ``+cpu`` torch has no match there. Without isolation the build imports the environment's
    torch and fetches nothing but sam2 and its small dependencies (hydra-core, iopath). No
    ``--upgrade``: torch and torchvision already satisfy sam2 and stay as they are.
    """
    pip = [env_python, "-m", "pip", "install", *PIP_QUIET_FLAGS]
    return [[*pip, *SAM2_BUILD_TOOLS, *extra],
            [*pip, "--no-build-isolation", f"sam2=={SAM2_VERSION}", *extra]]


def existing_env_python(env_dir: str, env_python: str) -> tuple[bool, str]:
    """Whether ``env_dir`` holds a working venv to update (``True, ""``), else why not."""
    if not os.path.exists(env_dir):
        return False, ""
    if not os.path.isfile(os.path.join(env_dir, "pyvenv.cfg")):
        if os.listdir(env_dir):
            raise InstallError(
                f"GeoALPS: {env_dir} exists and is not a Python environment; choose another "
                "folder or remove it."
            )
        return False, ""
    info, why = probe_python(env_python)
    if info is None:
        return False, f"the environment in {env_dir} is broken ({why}); it is made again"
    return True, ""


def installed_version(cli: str) -> str:
    """What ``geoalps --version`` says (``geoalps, version 0.1.0`` -> ``0.1.0``); ``""`` if not."""
    try:
        done = run_captured([cli, "--version"], PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    match = re.search(r"version\s+(\S+)", done.stdout + done.stderr)
    return match.group(1) if done.returncode == 0 and match else ""
