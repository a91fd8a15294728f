"""Naming pseudo-classes from a few examples per true class, against the many-to-one oracle (issue 25).

For each scene of the scene bank (``--half``; the report half adds the real land-cover scenes),
at K = C and 2C (C = true classes) and each seed, the default ``geoalps.label`` run (classical
engine, its k-means model saved) is named by ``geoalps classes name`` from ``--examples-per-class``
random points per true class (drawn from the truth with the seed; the name is the truth's class
name, ``class <code>`` where the truth has none). Scored on the label raster against the truth:

- ``named_acc``: pixel accuracy of the named output (a pixel is right when its object's name is
  its true class's name; pixels under no object are misses, as for the oracle), read from the
  named layer's ``class_name`` burnt on the label raster's grid, so objects of a split class
  count under their own names;
- ``oracle_acc``: the many-to-one pixel accuracy (each pseudo-class taking its majority true
  class from the full truth), the best any naming of these classes can do;
- ``unnamed``: pseudo-classes left without a name.

Each scene, K and seed appends a JSON line to ``results.jsonl`` with the commit and ``--tag``.

    .venv/bin/python benchmarks/naming/run.py --half selection --tag naming-main
    .venv/bin/python benchmarks/naming/run.py --half selection --tag naming-main-nosplit --no-split
    .venv/bin/python benchmarks/naming/run.py --table naming-main
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results.jsonl"
#: Issue 25's target: named accuracy within this of the oracle, with >= 3 examples per class.
WITHIN = 0.02


def _bank_module():
    spec = importlib.util.spec_from_file_location("label_quality_bank", ROOT / "benchmarks" / "label_quality" / "bank.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def truth_names(path: Path) -> dict[int, str]:
    """Class code -> name from the truth's ``CLASS_NAMES`` tag (the bank's), else ``class <code>``."""
    with rasterio.open(path) as src:
        tag = src.tags().get("CLASS_NAMES")
        values = np.unique(src.read(1))
        nodata = src.nodata
    codes = [int(v) for v in values if nodata is None or v != nodata]
    if tag:
        names = tag.split(",")
        return {c: names[c] for c in codes if c < len(names)}
    return {c: f"class {c}" for c in codes}


def draw_examples(truth_path: Path, per_class: int, seed: int, out: Path) -> None:
    """``per_class`` random pixel centres of each true class as points with a ``name`` field."""
    import geopandas as gpd
    from shapely import points

    names = truth_names(truth_path)
    with rasterio.open(truth_path) as src:
        truth, transform, crs = src.read(1), src.transform, src.crs
    rng = np.random.default_rng(seed)
    rows, cols, labels = [], [], []
    for code, name in sorted(names.items()):
        where = np.flatnonzero(truth.ravel() == code)
        pick = rng.choice(where, size=min(per_class, where.size), replace=False)
        rows.extend(pick // truth.shape[1]), cols.extend(pick % truth.shape[1]), labels.extend([name] * pick.size)
    xs, ys = rasterio.transform.xy(transform, rows, cols)
    gpd.GeoDataFrame({"name": labels}, geometry=points(np.c_[xs, ys]), crs=crs).to_file(out, driver="GPKG")


def score(pseudo: np.ndarray, pseudo_nodata, truth: np.ndarray, truth_nodata, named_codes: np.ndarray,
          code_names: dict[int, str]) -> dict:
    """Named and oracle pixel accuracy over the truth's valid pixels."""
    valid = np.ones(truth.shape, bool) if truth_nodata is None else truth != truth_nodata
    t = truth[valid].astype(np.int64)
    p = pseudo[valid].astype(np.int64)
    under = p != (pseudo_nodata if pseudo_nodata is not None else -1)
    k = int(p[under].max()) + 1 if under.any() else 1
    codes = np.array(sorted(code_names))
    t_index = np.searchsorted(codes, t)
    table = np.zeros((k, codes.size))
    np.add.at(table, (p[under], t_index[under]), 1)
    oracle = table.max(axis=1).sum() / t.size
    named = (named_codes[valid] == t_index).sum() / t.size
    return {"named_acc": float(named), "oracle_acc": float(oracle)}


def named_code_raster(named_layer: Path, grid: Path, code_names: dict[int, str]) -> np.ndarray:
    """Each pixel's named class as an index into the sorted truth codes (-1: a name the truth
    lacks, -2: under no object), from the named layer's polygons burnt on ``grid``."""
    import pyogrio
    from rasterio.features import rasterize

    named = pyogrio.read_dataframe(named_layer, layer="masks", columns=["class_name"])
    with rasterio.open(grid) as src:
        shape, transform = (src.height, src.width), src.transform
    index = {n: i for i, n in enumerate(code_names[c] for c in sorted(code_names))}
    lookup = np.array([-2] + [index.get(n, -1) for n in named["class_name"].astype(str)])
    burnt = rasterize(zip(named.geometry.values, range(1, len(named) + 1)), out_shape=shape, transform=transform,
                      fill=0, dtype="int32")
    return lookup[burnt]


def one(scene: dict, k: int, seed: int, per_class: int, work: Path, label_options: dict, split: bool = True) -> dict:
    from geoalps import label
    from geoalps.classes.naming import name_classes

    out, raster, model = work / "out.gpkg", work / "labels.tif", work / "km.npz"
    label([str(scene["image"])], out, raster_out=raster, kmeans_model=model, classes=k, seed=seed,
          quiet=True, **label_options)
    examples = work / "examples.gpkg"
    draw_examples(Path(scene["classes"]), per_class, seed + 1000, examples)
    report = name_classes(out, work / "named.gpkg", examples=examples, kmeans_model=model, split=split)
    with rasterio.open(raster) as src:
        pseudo, pseudo_nodata = src.read(1), src.nodata
    with rasterio.open(scene["classes"]) as src:
        truth, truth_nodata = src.read(1), src.nodata
    code_names = truth_names(Path(scene["classes"]))
    named_codes = named_code_raster(work / "named.gpkg", raster, code_names)
    row = score(pseudo, pseudo_nodata, truth, truth_nodata, named_codes, code_names)
    row["unnamed"] = sum(1 for c in range(report.names.n_classes) if c not in report.names.names)
    row["filled"] = len(getattr(report, "filled", {}) or {})
    row["split_classes"] = len(getattr(report, "split", {}) or {})
    return row


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scene"], r["K"]), []).append(r)
    lines = ["| scene | K | seeds | named accuracy | oracle accuracy | gap | unnamed classes |", "|---|---|---|---|---|---|---|"]
    gaps = []
    for (name, k), rs in sorted(groups.items()):
        named = [r["named_acc"] for r in rs]
        oracle = [r["oracle_acc"] for r in rs]
        gap = statistics.mean(oracle) - statistics.mean(named)
        gaps.append((gap, name, k))
        lines.append(f"| {name} | {k} | {len(rs)} | {statistics.mean(named):.3f} ({min(named):.2f}, {max(named):.2f}) | "
                     f"{statistics.mean(oracle):.3f} | {gap:+.3f} | {statistics.mean(r['unnamed'] for r in rs):.1f} |")
    misses = [f"{n} K={k} {g:+.3f}" for g, n, k in sorted(gaps, reverse=True) if g > WITHIN]
    lines.append("")
    lines.append(f"- {'PASS' if not misses else 'FAIL'} named accuracy within {WITHIN} of the oracle "
                 f"({len(gaps)} scene-K pairs){': ' + ', '.join(misses) if misses else ''}")
    if gaps:
        lines.append(f"- median gap {statistics.median(g for g, _, _ in gaps):+.3f}, worst {max(gaps)[0]:+.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=("selection", "report", "all"), default="selection")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--mult", default="1,2")
    parser.add_argument("--scenes", default=None)
    parser.add_argument("--examples-per-class", type=int, default=3)
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--no-split", action="store_true", help="name whole classes only (classes name --no-split)")
    parser.add_argument("--tag", default="current")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--table", metavar="TAG")
    args = parser.parse_args(argv)
    if args.table:
        rows = [json.loads(line) for line in args.json.read_text().splitlines() if line.strip()]
        print(table([r for r in rows if r["tag"] == args.table]))
        return 0
    bank = _bank_module()
    scenes = bank.bank_scenes(bank.BANK, args.half, with_real=not args.no_real)
    if args.scenes:
        scenes = [s for s in scenes if s["name"] in args.scenes.split(",")]
    commit, rows = _commit(), []
    for scene in scenes:
        for mult in (int(m) for m in args.mult.split(",")):
            k = scene["true_classes"] * mult
            for seed in (int(s) for s in args.seeds.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    row = {"tag": args.tag, "commit": commit, "scene": scene["name"], "half": scene["half"],
                           "real": scene["real"], "K": k, "mult": mult, "seed": seed,
                           "examples_per_class": args.examples_per_class, "split": not args.no_split}
                    row.update(one(scene, k, seed, args.examples_per_class, Path(tmp), {}, split=not args.no_split))
                rows.append(row)
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{args.tag} {scene['name']:<20} K={k:<3} s{seed} named {row['named_acc']:.3f} "
                      f"oracle {row['oracle_acc']:.3f} unnamed {row['unnamed']}", flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
