"""Peer benchmark: ``geoalps label --engine sam`` against segment-geospatial's
``SamGeo.generate(..., batch=True)``, end to end, same scene, same checkpoint, one session.

Each tool runs as a subprocess measured by ``benchmarks/_measure.py``'s ``run_measured`` (wall
seconds; peak RSS summed over the process tree): geoalps through its CLI from the repo venv,
samgeo through ``samgeo_driver.py`` with the separate samgeo venv's Python (see README.md for
that venv's install commands; samgeo is never a geoalps dependency). Both end with a GeoPackage of
polygons; the script then reads both outputs (count, CRS, bounds against the scene's).

Inputs, made on first use in the scratch folder (never in the repo):
- ``sam_vit_b_random.pth``: vit_b shapes, random weights (seed 0), decoder sharpened with
  ``tests.sam_models.sharpen_random_decoder`` so random weights yield many distinct masks,
  saved in the official format (a plain state dict) with ``save_sam_checkpoint``;
- ``aerial_mosaic_1024.tif``: the 2x2 mosaic of the four 512 px aerial/NEON scenes in
  ../shared/realdata (the benchmarks/sam_amg tile), with the grid of aerial_rgb_030m_1.tif
  (EPSG:2949, 0.3 m, same origin). Only its top-left quarter is really at that place; the
  georeferencing is there so both tools treat it as a GeoTIFF.
The other scene is the repo's sample_data/scene_rgb_u8.tif (700x600 RGB uint8, EPSG:3857).

Same SAM settings on both sides: points_per_side (16 by default), points_per_batch 64,
pred_iou_thresh 0 (random weights never predict an IoU near 0.88; 0 turns the filter off in both),
stability 0.95, box NMS 0.7, no crop layers, no minimum area (geoalps --min-area-px 1,
--max-area-frac 1). Tiling cannot be identical: samgeo reads windows of sample + 2 x 128 px
starting 128 px before the scene edge (padding with 0); geoalps tiles with --tile-size/--overlap
inside the scene. Pairs compared (see PAIRS): each tool's default tiling, and the closest match.

Every measured run takes ``/tmp/geoalps-cpu.lock`` (flock) so it never overlaps another
engineer's timed run; runs alternate order between rounds. Rows go to results.jsonl, the table
to stdout. CPU cost on 2 cores, points_per_side 16: about 20 min a round (idle machine).

    $ .venv/bin/python benchmarks/samgeo_peer/bench.py --rounds 2
    $ .venv/bin/python benchmarks/samgeo_peer/bench.py --scenes sample --rounds 1   # ~8 min
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

from _measure import run_measured

SHARED = Path(os.environ.get("GEOALPS_SHARED", REPO.parent / "shared"))
SCRATCH = Path(os.environ.get("GEOALPS_PEER_SCRATCH", "/tmp/geoalps-peer"))
GEOALPS = REPO / ".venv" / "bin" / "geoalps"
SAMGEO_PY = Path(os.environ.get("SAMGEO_PYTHON", "/tmp/samgeo-venv/bin/python"))
LOCK = "/tmp/geoalps-cpu.lock"
AERIAL = [
    "aerial/aerial_rgb_030m_1.tif",
    "aerial/aerial_rgb_015m_2.tif",
    "aerial/neon_osbs_029_rgb.tif",
    "aerial/neon_sjer_477_rgb.tif",
]

# Variants: (tool, scene, tiling). geoalps: (tile_size, overlap); samgeo: batch_sample_size.
VARIANTS = {
    "geoalps sample t1024": ("geoalps", "sample", (1024, 128)),
    "samgeo sample s512": ("samgeo", "sample", 512),
    "samgeo sample s896": ("samgeo", "sample", 896),
    "geoalps aerial t1024": ("geoalps", "aerial", (1024, 128)),
    "geoalps aerial t768": ("geoalps", "aerial", (768, 256)),
    "samgeo aerial s512": ("samgeo", "aerial", 512),
}
# (label, geoalps variant, samgeo variant)
PAIRS = [
    ("sample 700x600, each tool's default tiling (1 tile of 700x600 / 4 windows of 768)",
     "geoalps sample t1024", "samgeo sample s512"),
    ("sample 700x600, one encoder pass each (1 tile of 700x600 / 1 window of 1152)",
     "geoalps sample t1024", "samgeo sample s896"),
    ("aerial 1024, 768 px windows, stride 512 (4 tiles / 9 windows)",
     "geoalps aerial t768", "samgeo aerial s512"),
    ("aerial 1024, each tool's default tiling (1 tile of 1024 / 9 windows of 768)",
     "geoalps aerial t1024", "samgeo aerial s512"),
]
# Order inside a round; odd rounds run it backwards.
ORDER = {
    "sample": ["geoalps sample t1024", "samgeo sample s512", "samgeo sample s896"],
    "aerial": ["geoalps aerial t768", "samgeo aerial s512", "geoalps aerial t1024"],
}


def make_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    import torch
    from geoalps.engines.sam.models import SAM_CONFIGS, build_sam
    from tests.sam_models import save_sam_checkpoint, sharpen_random_decoder

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_sam(SAM_CONFIGS["vit_b"])
        with torch.no_grad():
            sharpen_random_decoder(model)
    return save_sam_checkpoint(model, path)


def make_aerial_mosaic(path: Path) -> Path:
    import numpy as np
    import rasterio
    from PIL import Image

    if path.is_file():
        return path
    sources = [SHARED / "realdata" / p for p in AERIAL]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise SystemExit(f"aerial scene needs {missing} (set GEOALPS_SHARED)")
    quads = []
    for p in sources:
        with rasterio.open(p) as src:
            data = np.moveaxis(src.read([1, 2, 3]), 0, -1).astype(np.uint8)
        quads.append(np.asarray(Image.fromarray(data).resize((512, 512), Image.BILINEAR)))
    mosaic = np.concatenate(
        [np.concatenate(quads[:2], axis=1), np.concatenate(quads[2:], axis=1)], axis=0
    )
    with rasterio.open(sources[0]) as ref:
        crs, transform = ref.crs, ref.transform
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=1024, height=1024, count=3, dtype="uint8",
        crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256,
    ) as dst:
        dst.write(np.moveaxis(mosaic, -1, 0))
    return path


def git_state() -> str:
    """HEAD of the repo whose geoalps runs (editable install), with ``+dirty`` when geoalps/
    has uncommitted edits: others may commit while a long benchmark runs."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "geoalps") else "")


@contextmanager
def cpu_lock():
    """The same lock as ``flock /tmp/geoalps-cpu.lock CMD``: timed runs never overlap."""
    with open(LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def inspect_output(gpkg: Path, scene: Path) -> dict:
    """Polygon count, CRS and bounds of a GeoPackage against its scene's."""
    import geopandas as gpd
    import pyogrio
    import rasterio

    if not gpkg.is_file():
        return {"polygons": None, "georeferenced": False, "note": "no output"}
    layers = [name for name, _ in pyogrio.list_layers(gpkg)]
    layer = "masks" if "masks" in layers else layers[0]
    gdf = gpd.read_file(gpkg, layer=layer)
    with rasterio.open(scene) as src:
        scene_crs, sb, res = src.crs, src.bounds, max(src.res)
    same_crs = gdf.crs is not None and gdf.crs == scene_crs
    if len(gdf):
        x0, y0, x1, y1 = (float(v) for v in gdf.total_bounds)
        inside = (x0 >= sb.left - res and y0 >= sb.bottom - res
                  and x1 <= sb.right + res and y1 <= sb.top + res)
        cover = float(gdf.geometry.union_all().area / ((sb.right - sb.left) * (sb.top - sb.bottom)))
    else:
        x0 = y0 = x1 = y1 = None
        inside, cover = None, 0.0
    return {
        "layer": layer,
        "polygons": len(gdf),
        "crs": gdf.crs.to_string() if gdf.crs is not None else None,
        "same_crs_as_scene": bool(same_crs),
        "bounds": [x0, y0, x1, y1],
        "bounds_inside_scene": inside,
        "covered_fraction": round(cover, 4),
        "georeferenced": bool(same_crs and inside is not False),
    }


def command(variant: str, scene: Path, ckpt: Path, out_dir: Path, args) -> tuple[list[str], Path]:
    tool, _, tiling = VARIANTS[variant]
    out_dir.mkdir(parents=True, exist_ok=True)
    if tool == "geoalps":
        tile, overlap = tiling
        out = out_dir / "geoalps.gpkg"
        cmd = [
            str(GEOALPS), "label", str(scene), "-o", str(out), "--engine", "sam",
            "--checkpoint", str(ckpt), "--device", "cpu",
            "--points-per-side", str(args.points_per_side), "--points-per-batch", "64",
            "--pred-iou-thresh", str(args.pred_iou_thresh),
            "--stability-thresh", str(args.stability_thresh), "--dedupe-iou", "0.7",
            "--crop-layers", "0", "--min-area-px", "1", "--max-area-frac", "1",
            "--tile-size", str(tile), "--overlap", str(overlap), "--overwrite", "-q",
        ]
        return cmd, out
    cmd = [
        str(SAMGEO_PY), str(HERE / "samgeo_driver.py"), str(scene), str(ckpt), str(out_dir),
        "--points-per-side", str(args.points_per_side), "--points-per-batch", "64",
        "--pred-iou-thresh", str(args.pred_iou_thresh),
        "--stability-thresh", str(args.stability_thresh), "--box-nms-thresh", "0.7",
        "--sample-size", str(tiling),
    ]
    return cmd, out_dir / "samgeo.gpkg"


def summarise(rows: list[dict]) -> str:
    """Markdown tables: every run, then median ratios per pair, for each group of SAM settings."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for row in rows:
        if row["returncode"] == 0:
            key = (row["points_per_side"], row["pred_iou_thresh"], row["stability_thresh"])
            groups.setdefault(key, {}).setdefault(row["variant"], []).append(row)
    out = []
    for (pps, iou, stab), by_variant in groups.items():
        out += [f"points_per_side {pps}, pred_iou_thresh {iou}, stability_thresh {stab}", "",
                ("| variant | wall s per run | peak MB per run | polygons | SAM masks (samgeo) "
                "| georeferenced |"), "|---|---|---|---|---|---|"]
        for variant in VARIANTS:
            rs = by_variant.get(variant)
            if not rs:
                continue
            walls = ", ".join(f"{r['seconds']:.1f}" for r in rs)
            peaks = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in rs)
            polys = ", ".join(str(r["output"]["polygons"]) for r in rs)
            masks = ", ".join(str(r.get("samgeo", {}).get("masks", "-")) for r in rs)
            geo = ", ".join(str(r["output"]["georeferenced"]) for r in rs)
            out.append(f"| {variant} | {walls} | {peaks} | {polys} | {masks} | {geo} |")
        out += ["", "| pair | wall s geoalps / samgeo (medians) | peak MB geoalps / samgeo (medians) |",
                "|---|---|---|"]
        for label, g, s in PAIRS:
            if g in by_variant and s in by_variant:
                gw = statistics.median(r["seconds"] for r in by_variant[g])
                sw = statistics.median(r["seconds"] for r in by_variant[s])
                gm = statistics.median(r["peak_rss_mb"] for r in by_variant[g])
                sm = statistics.median(r["peak_rss_mb"] for r in by_variant[s])
                out.append(f"| {label} | {gw:.1f} / {sw:.1f} = **{gw / sw:.2f}** "
                           f"| {gm:.0f} / {sm:.0f} = **{gm / sm:.2f}** |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scenes", nargs="+", default=["sample", "aerial"], choices=["sample", "aerial"])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="subset to run")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.0)
    parser.add_argument("--stability-thresh", type=float, default=0.95)
    parser.add_argument("--results", type=Path, default=HERE / "results.jsonl")
    parser.add_argument("--summarise", action="store_true", help="only print the table of --results")
    args = parser.parse_args()

    if args.summarise:
        rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
        print(summarise(rows))
        return
    if not SAMGEO_PY.is_file():
        raise SystemExit(f"{SAMGEO_PY}: no samgeo venv (see README.md; or set SAMGEO_PYTHON)")
    ckpt = make_checkpoint(SCRATCH / "sam_vit_b_random.pth")
    scenes = {
        "sample": REPO / "sample_data" / "scene_rgb_u8.tif",
        "aerial": make_aerial_mosaic(SCRATCH / "aerial_mosaic_1024.tif"),
    }
    meta = {
        "session": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "points_per_side": args.points_per_side,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_thresh": args.stability_thresh,
    }
    rows = []
    for rnd in range(args.rounds):
        for scene_name in args.scenes:
            order = [v for v in ORDER[scene_name] if not args.variants or v in args.variants]
            if rnd % 2:
                order = order[::-1]
            for variant in order:
                scene = scenes[scene_name]
                out_dir = SCRATCH / "out" / variant.replace(" ", "_")
                cmd, out = command(variant, scene, ckpt, out_dir, args)
                with cpu_lock():
                    load_before = os.getloadavg()[0]
                    measured = run_measured(cmd)
                    load_after = os.getloadavg()[0]
                row = {**meta, "geoalps_commit": git_state(), "round": rnd, "variant": variant, "tool": VARIANTS[variant][0],
                       "scene": str(scene), "cmd": cmd,
                       "seconds": round(measured["seconds"], 2),
                       "peak_rss_mb": round(measured["peak_rss_mb"], 1),
                       "returncode": measured["returncode"], "stderr_tail": measured["stderr"],
                       "load1_before_after": [round(load_before, 2), round(load_after, 2)]}
                stats = out_dir / "samgeo_stats.json"
                if VARIANTS[variant][0] == "samgeo" and stats.is_file():
                    row["samgeo"] = json.loads(stats.read_text())
                    stats.unlink()
                row["output"] = inspect_output(out, scene)
                rows.append(row)
                with open(args.results, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"round {rnd} {variant}: {row['seconds']:.1f} s, {row['peak_rss_mb']:.0f} MB, "
                      f"rc {row['returncode']}, {row['output'].get('polygons')} polygons, "
                      f"load {row['load1_before_after']}", flush=True)
    print(summarise(rows))


if __name__ == "__main__":
    main()
