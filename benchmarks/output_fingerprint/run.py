"""Fingerprints of ``geoalps label`` outputs on the sample scenes, to prove a change kept them.

Runs the CLI (``python -m geoalps``, so it works on any checkout) for both engines (the classical
engine, and SAM with a tiny random-weight checkpoint built here), with 1 and 2 workers, and once
resumed from a half-finished work folder; for every run it records the number of polygons, a
SHA-256 over the rows sorted by geometry (WKB hex + every attribute) and a SHA-256 over the label
raster's pixels, and the commit it ran on (key ``_meta``). Compare two checkouts' JSON files with
``--compare``, which appends one row (both commits, runs the same and differing) to
``results.jsonl`` beside this script:

    python benchmarks/output_fingerprint/run.py -o before.json      # on the old commit
    python benchmarks/output_fingerprint/run.py -o after.json       # on the new one
    python benchmarks/output_fingerprint/run.py --compare before.json after.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _measure import REPO, append_rows, commit  # noqa: E402

RESULTS = HERE / "results.jsonl"
SCENES = ("scene_rgb_u8.tif", "scene_rgbn_u16.tif")


def layer_digest(path: Path) -> dict:
    """Rows sorted by (WKB, attributes): the same set of polygons and attributes gives the same hash."""
    import numpy as np
    import pyogrio
    import shapely

    frame = pyogrio.read_dataframe(path, layer="masks")
    columns = [c for c in frame.columns if c != "geometry"]
    rows = sorted(
        (shapely.to_wkb(g, hex=True), tuple(str(frame[c].iloc[i]) for c in columns if c != "instance_id"))
        for i, g in enumerate(frame.geometry.values)
    )
    digest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    ids = frame["instance_id"].to_numpy() if "instance_id" in frame else np.zeros(0)
    return {"polygons": len(frame), "columns": columns, "rows_sha256": digest,
            "first_instance_id": int(ids.min()) if len(ids) else None}


def raster_digest(path: Path) -> dict:
    import rasterio

    with rasterio.open(path) as src:
        data = src.read()
        return {"pixels_sha256": hashlib.sha256(data.tobytes()).hexdigest(), "crs": str(src.crs),
                "transform": list(src.transform)[:6], "tags_band1": src.tags(1)}


def tiny_checkpoint(folder: Path) -> Path:
    """A tiny random-weight SAM saved as a real checkpoint (the layout of the package may differ)."""
    code = (
        "import pathlib, sys\n"
        "import geoalps\n"
        "sys.path.insert(0, str(pathlib.Path(geoalps.__file__).parents[1]))  # that tree's tests/\n"
        "try:\n from tests.sam_models import build_tiny_sam, save_sam_checkpoint\n"
        "except ImportError:\n"
        " try:\n  from geoalps.engines.sam.models import build_tiny_sam, save_sam_checkpoint\n"
        " except ImportError:\n  from geoalps.sam.models import build_tiny_sam, save_sam_checkpoint\n"
        "save_sam_checkpoint(build_tiny_sam(seed=0), sys.argv[1])\n"
    )
    path = folder / "tiny_sam.pth"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def run_label(scene: Path, out: Path, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "geoalps", "label", str(scene), "-o", str(out),
           "--raster-out", str(out.with_suffix(".tif")), "--overwrite", "-q", *extra]
    subprocess.run(cmd, check=True, cwd=REPO)


def engine_args(folder: Path) -> dict[str, list[str]]:
    """The classical engine and a tiny random-weight SAM (thresholds 0, so it keeps masks)."""
    checkpoint = tiny_checkpoint(folder)
    return {
        "classical": ["--engine", "classical", "--tile-size", "512", "--overlap", "64"],
        "sam": ["--engine", "sam", "--checkpoint", str(checkpoint), "--points-per-side", "8",
                "--pred-iou-thresh", "0", "--stability-thresh", "0", "--tile-size", "512", "--overlap", "64"],
    }


def realdata_fingerprints(folder: Path, engines: dict[str, list[str]]) -> dict:
    """``--realdata``: every raster of ``../shared/realdata`` but its truths, and one run of three
    scenes in three CRSs (a label-raster folder), each engine with 1 and 2 workers. A run that
    fails (the broken files) is recorded by its exit code and last error line, so the one-line
    errors are compared too. About 90 runs: tens of minutes on 2 cores."""
    real = REPO.parent / "shared" / "realdata"
    if not real.is_dir():
        print(f"notice: {real} not found; --realdata runs nothing", file=sys.stderr)
        return {}
    scenes = sorted(p for p in real.rglob("*.tif") if "buildings" not in p.name and "nlcd" not in p.name)
    multi = [real / "satellite" / "landsat7_rgb_byte.tif", real / "aerial" / "aerial_rgb_030m_1.tif",
             real / "satellite" / "webmercator_cog_jpeg.tif"]
    report = {}
    for name, paths in [("multiCRS3", multi)] + [(scene.name, [scene]) for scene in scenes]:
        for engine, args in engines.items():
            for workers in (1, 2):
                key = f"{name}:{engine}:workers{workers}"
                out = folder / f"{key.replace(':', '_')}.gpkg"
                raster = folder / key.replace(":", "_") if len(paths) > 1 else out.with_suffix(".tif")
                if len(paths) > 1:
                    raster.mkdir()
                cmd = [sys.executable, "-m", "geoalps", "label", *map(str, paths), "-o", str(out), "--raster-out",
                       str(raster), "--overwrite", "-q", *args, "--workers", str(workers)]
                done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                if done.returncode:
                    report[key] = {"rc": done.returncode, "error": (done.stderr.strip().splitlines() or [""])[-1],
                                   "output_written": out.exists()}
                else:
                    rasters = ({p.name: raster_digest(p) for p in sorted(raster.glob("*.tif"))} if len(paths) > 1
                               else raster_digest(raster))
                    report[key] = {"layer": layer_digest(out), "raster": rasters}
                print(key, json.dumps(report[key])[:100], file=sys.stderr)
    return report


def fingerprints(folder: Path, engines: dict[str, list[str]]) -> dict:
    report = {}
    for scene_name in SCENES:
        scene = REPO / "sample_data" / scene_name
        for engine, args in engines.items():
            for workers in (1, 2):
                key = f"{scene_name}:{engine}:workers{workers}"
                out = folder / f"{key.replace(':', '_')}.gpkg"
                run_label(scene, out, [*args, "--workers", str(workers)])
                report[key] = {"layer": layer_digest(out), "raster": raster_digest(out.with_suffix(".tif"))}
                print(key, report[key]["layer"]["polygons"], report[key]["layer"]["rows_sha256"][:12], file=sys.stderr)
            # resumed: keep the work folder, drop half its tiles, run again with --resume
            key = f"{scene_name}:{engine}:resumed"
            out = folder / f"{key.replace(':', '_')}.gpkg"
            run_label(scene, out, [*args, "--keep-work"])
            tiles = sorted((Path(f"{out}.geoalps-work") / "tiles").glob("*.npz"))
            for tile in tiles[::2]:
                tile.unlink()
            out.unlink()
            out.with_suffix(".tif").unlink()
            run_label(scene, out, [*args, "--resume"])
            report[key] = {"layer": layer_digest(out), "raster": raster_digest(out.with_suffix(".tif")),
                           "tiles_redone": len(tiles[::2])}
            print(key, report[key]["layer"]["polygons"], report[key]["layer"]["rows_sha256"][:12], file=sys.stderr)
    return report


def compare(a_path: str, b_path: str, results: Path = RESULTS, tag: str = "") -> int:
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    commits = [side.pop("_meta", {}).get("commit", "unknown (fingerprint without _meta)") for side in (a, b)]
    differ = 0
    for key in sorted(set(a) | set(b)):
        same = a.get(key) == b.get(key)
        differ += not same
        entry = b.get(key) or a.get(key)
        what = f"{entry['layer']['polygons']} polygons" if "layer" in entry else f"exit {entry['rc']}: {entry['error']}"
        print(f"{'same   ' if same else 'DIFFERS'} {key}: {what}")
        if not same and key in a and key in b:
            for part in sorted(set(a[key]) | set(b[key])):
                if a[key].get(part) != b[key].get(part):
                    print(f"    {part}: {a[key].get(part)} -> {b[key].get(part)}")
    print(f"{len(set(a) | set(b)) - differ} same, {differ} differ")
    append_rows(results, [{"before_commit": commits[0], "after_commit": commits[1], "runs": len(set(a) | set(b)),
                           "same": len(set(a) | set(b)) - differ, "differ": differ,
                           "differing": sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))}], tag=tag)
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="JSON file for the fingerprints")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--tag", default="", help="--compare: recorded with the row")
    parser.add_argument("--results", type=Path, default=RESULTS, help="--compare: results.jsonl to append the row to")
    parser.add_argument("--realdata", action="store_true",
                        help="also every raster of ../shared/realdata, 1 and 2 workers, and a 3-CRS run")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare, results=args.results, tag=args.tag)
    with tempfile.TemporaryDirectory(prefix="geoalps-fingerprint-") as tmp:
        engines = engine_args(Path(tmp))
        report = fingerprints(Path(tmp), engines)
        if args.realdata:
            report.update(realdata_fingerprints(Path(tmp), engines))
    report["_meta"] = {"commit": commit()}
    text = json.dumps(report, indent=1, sort_keys=True)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GEOALPS_DASK_START", "fork")
    sys.exit(main())
