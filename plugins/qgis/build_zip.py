"""Build ``dist/geoalps_processing-<version>.zip`` for QGIS's Plugin Manager ("Install from ZIP").

The archive holds one top-level folder named like the plugin package, as QGIS expects; caches
and editor files are left out. Usage: ``python plugins/qgis/build_zip.py [--out DIR]``.
"""
from __future__ import annotations

import argparse
import configparser
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "geoalps_processing"
REPO = HERE.parents[1]
EXCLUDED_PARTS = {"__pycache__", ".pytest_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp"}


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


def build_zip(out_dir: Path = REPO / "dist", plugin_dir: Path = PLUGIN) -> Path:
    """Write the zip (fixed timestamps, so the same sources give the same bytes); return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{plugin_dir.name}-{plugin_version(plugin_dir)}.zip"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files(plugin_dir):
            name = f"{plugin_dir.name}/{path.relative_to(plugin_dir).as_posix()}"
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    print(build_zip(parser.parse_args().out))


if __name__ == "__main__":
    main()
