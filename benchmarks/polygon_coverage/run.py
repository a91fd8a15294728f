"""Coverage quality of classical-engine polygons: do neighbours share their edges vertex for
vertex (``shapely.coverage_is_valid`` / ``coverage_invalid_edges``), how many vertices, and do
the polygons cover exactly the label raster's pixels?

Runs ``geoalps label`` (``python -m geoalps``, so it works on any checkout) on both sample
scenes, in one tile and in 256 px tiles with 32 px overlap (so seams are crossed), without and
with ``--simplify``; prints one JSON object per run and appends it (with the commit) to
``results.jsonl`` beside this script:

    python benchmarks/polygon_coverage/run.py                     # this checkout
    python benchmarks/polygon_coverage/run.py --simplify 1px --simplify 2px
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from _measure import REPO, append_rows  # noqa: E402

RESULTS = HERE / "results.jsonl"
SCENES = ("scene_rgb_u8.tif", "scene_rgbn_u16.tif")
TILINGS = {"one_tile": ["--tile-size", "2048", "--overlap", "0"], "tiles_256": ["--tile-size", "256", "--overlap", "32"]}


def measure(gpkg: Path, raster: Path) -> dict:
    """Coverage validity, vertex count and pixel agreement of one output with its label raster."""
    import numpy as np
    import pyogrio
    import rasterio
    import shapely
    from rasterio import features

    frame = pyogrio.read_dataframe(gpkg, layer="masks")
    geoms = frame.geometry.values
    invalid = shapely.coverage_invalid_edges(geoms)
    with rasterio.open(raster) as src:
        labels, transform, nodata = src.read(1), src.transform, src.nodata
    burnt = np.full(labels.shape, -1, dtype=np.int32)
    order = np.argsort(-shapely.area(geoms), kind="stable")  # the raster's rule, if any overlaps remain
    features.rasterize(zip(geoms[order], frame["pseudo_class"].to_numpy()[order].tolist()), out=burnt,
                       transform=transform)
    labelled = labels != nodata
    same = (burnt == np.where(labelled, labels.astype(np.int32), -1)).sum()
    overlap_area = float(shapely.area(shapely.union_all(geoms)))
    return {
        "polygons": len(frame),
        "coverage_is_valid": bool(shapely.coverage_is_valid(geoms)),
        "polygons_with_invalid_edges": int((~shapely.is_empty(invalid)).sum()),
        "vertices": int(shapely.get_num_coordinates(geoms).sum()),
        "overlap_px": round((float(shapely.area(geoms).sum()) - overlap_area) / abs(transform.determinant), 3),
        "pixels_labelled": int(labelled.sum()),
        "pixels_differing_from_raster": int(labels.size - same),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simplify", action="append", default=[], help="also run with this --simplify")
    parser.add_argument("-o", "--output", help="also write the results to this JSON file")
    parser.add_argument("--tag", default="", help="recorded with the rows")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results.jsonl to append the rows to")
    args = parser.parse_args()
    report, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="geoalps-coverage-") as tmp:
        for scene in SCENES:
            for tiling, tile_args in TILINGS.items():
                for simplify in [None, *args.simplify]:
                    key = f"{scene}:{tiling}:simplify={simplify}"
                    out = Path(tmp) / "out.gpkg"
                    extra = ["--simplify", simplify] if simplify else []
                    subprocess.run([sys.executable, "-m", "geoalps", "label", str(REPO / "sample_data" / scene), "-o",
                                    str(out), "--raster-out", str(out.with_suffix(".tif")), "--engine", "classical",
                                    "--overwrite", "-q", *tile_args, *extra], check=True, cwd=REPO)
                    report[key] = measure(out, out.with_suffix(".tif"))
                    rows.append({"scene": scene, "tiling": tiling, "simplify": simplify, **report[key]})
                    print(key, json.dumps(report[key]), file=sys.stderr)
    append_rows(args.results, rows, tag=args.tag)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GEOALPS_DASK_START", "fork")
    sys.exit(main())
