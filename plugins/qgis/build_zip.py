"""Build ``dist/geoalps_processing-<version>.zip`` for QGIS's Plugin Manager ("Install from ZIP").

The archive holds one top-level folder named like the plugin package, as QGIS expects, with the
repository's LICENSE and the geoalps wheel in ``wheels/`` (what "Install or update geoalps"
installs); caches and editor files are left out. The wheel is built from an sdist of the
repository (``python -m build``: never from a stale ``build/`` folder) unless one is given.

Usage: ``python plugins/qgis/build_zip.py [--out DIR] [--wheel geoalps-X-py3-none-any.whl]
[--python PYTHON_WITH_BUILD]``.
"""
from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "geoalps_processing"
REPO = HERE.parents[1]
EXCLUDED_PARTS = {"__pycache__", ".pytest_cache", "wheels"}  # wheels/: only the one built here
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp"}
#: Fixed timestamps (zip entries, and the wheel through SOURCE_DATE_EPOCH): same sources, same bytes.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)
SOURCE_DATE_EPOCH = "1704067200"  # 2024-01-01


def plugin_version(plugin_dir: Path = PLUGIN) -> str:
    """The ``version`` from metadata.txt: the zip name and the Plugin Manager agree on it."""
    metadata = configparser.ConfigParser()
    metadata.read(plugin_dir / "metadata.txt", encoding="utf-8")
    return metadata["general"]["version"]


def plugin_files(plugin_dir: Path = PLUGIN) -> list[Path]:
    return sorted(
        path for path in plugin_dir.rglob("*")
        if path.is_file()
        and not EXCLUDED_PARTS & set(path.relative_to(plugin_dir).parts)
        and path.suffix not in EXCLUDED_SUFFIXES
        and not path.name.startswith(".")
    )


def _has_build(python: str) -> bool:
    done = subprocess.run([python, "-c", "import build"], capture_output=True)
    return done.returncode == 0


def build_python() -> str:
    """A Python with the ``build`` package: this one, else the repository's ``.venv``."""
    for python in (sys.executable, str(REPO / ".venv" / "bin" / "python")):
        if os.access(python, os.X_OK) and _has_build(python):
            return python
    raise SystemExit(
        "build_zip: no Python with the 'build' package (pip install build, or "
        "pip install -e '.[dev]'); or pass --python or --wheel"
    )


def build_wheel(out_dir: Path, python: str | None = None, repo: Path = REPO) -> Path:
    """``python -m build`` of ``repo`` (sdist, then the wheel from it) into ``out_dir``; the wheel."""
    python = python or build_python()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
    done = subprocess.run(
        [python, "-m", "build", "--outdir", str(out_dir), str(repo)],
        env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"build_zip: building the wheel failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    wheels = sorted(out_dir.glob("geoalps-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"build_zip: expected one wheel in {out_dir}, found {wheels}")
    return wheels[0]


def build_zip(out_dir: Path = REPO / "dist", plugin_dir: Path = PLUGIN, wheel: Path | None = None,
              python: str | None = None) -> Path:
    """Write the zip; return its path. ``wheel``: put this one in (else build it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{plugin_dir.name}-{plugin_version(plugin_dir)}.zip"
    with tempfile.TemporaryDirectory() as scratch:
        if wheel is None:
            wheel = build_wheel(Path(scratch), python)
        entries = [(path.relative_to(plugin_dir).as_posix(), path) for path in plugin_files(plugin_dir)]
        if not (plugin_dir / "LICENSE").is_file():
            entries.append(("LICENSE", REPO / "LICENSE"))
        entries.append((f"wheels/{Path(wheel).name}", Path(wheel)))
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for relative, path in sorted(entries):
                info = zipfile.ZipInfo(f"{plugin_dir.name}/{relative}", date_time=ZIP_DATE)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    parser.add_argument("--wheel", type=Path, help="a geoalps wheel to include instead of building one")
    parser.add_argument("--python", help="the Python that runs 'python -m build' (default: this one "
                        "if it has 'build', else .venv's)")
    args = parser.parse_args()
    print(build_zip(args.out, wheel=args.wheel, python=args.python))


if __name__ == "__main__":
    main()
