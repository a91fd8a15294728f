"""Pseudo-label quality over the scene bank, with the loss split into segmentation and clustering (issue 25).

For each scene of ``benchmarks/scene_bank`` (``--half selection|report|all``; the real land-cover
scenes, ``sample_data/*.gt.tif`` and Landsat-8 Zion, join the report half, tagged real), at
K = C and 2C (C = true classes) and each seed, the default ``geoalps.label`` run (classical
engine; ``--label-option key=value`` passes settings through) is scored with:

(a) the segment-oracle ceiling of its regions (``instance_id`` of its polygons burnt on the
    scene grid; :mod:`geoalps.evaluation.oracle`);
(b) k-means (scikit-learn ``KMeans``, same K and seed) on those regions' standardised band
    means, unweighted and weighted by region area;
(c) the output itself: many-to-one and Hungarian mIoU and NMI of its label raster;
(d) per-pixel k-means (``run.py``'s baseline, same K and seed);
(e) the OTB anchor: ``otbcli_LargeScaleMeanShift`` over a small fixed grid (:data:`OTB_GRID`,
    the range radius a share of the scene's value range), k-means on its segments' band means,
    the median and the best over the grid (segmentations cached in the bank folder, as they
    depend on the scene only); skipped with a notice when OTB is missing or with ``--no-otb``;
and the time per tile geoalps reports. Each scene, K and seed appends a JSON line to
``bank.results.jsonl`` with the commit (``+dirty`` when tracked files differ) and ``--tag``.

    .venv/bin/python benchmarks/label_quality/bank.py --half selection --tag main-default
    .venv/bin/python benchmarks/label_quality/bank.py --tag ms30 --label-option min_area_px=30 --no-otb
    .venv/bin/python benchmarks/label_quality/bank.py --table main-default   # table + targets

The bank is written first (``make_bank.py``, seconds) when its folder has no ``bank.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BANK = ROOT / "benchmarks" / "scene_bank" / "out"
RESULTS = HERE / "bank.results.jsonl"
OTB_APP = "otbcli_LargeScaleMeanShift"
#: OTB LargeScaleMeanShift settings: (spatial radius px, range radius as a share of the norm of the
#: bands' 2-98 % ranges, smallest segment px).
OTB_GRID = tuple((s, 0.1, m) for s in (5, 10) for m in (20, 50))
#: Issue 25's targets.
GAIN_AT_K, MEDIAN_GAIN_AT_K, ORACLE_MIN = 0.03, 0.08, 0.90


def _load(name: str, path: Path):
    """A sibling script as a module (one definition of each baseline and scorer)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _load("label_quality_run", HERE / "run.py")


# -- scenes ----------------------------------------------------------------------------------
def bank_scenes(bank: Path, half: str, with_real: bool = True) -> list[dict]:
    """Scene records: the bank's (of ``half``) and, for the report half, the real land-cover ones."""
    if not (bank / "bank.json").exists():
        make = _load("scene_bank_make", ROOT / "benchmarks" / "scene_bank" / "make_bank.py")
        make.write_bank(bank)
    scenes = []
    for r in json.loads((bank / "bank.json").read_text())["scenes"]:
        if half in ("all", r["half"]):
            scenes.append(dict(name=r["name"], image=bank / r["image"], classes=bank / r["truth"], half=r["half"],
                               real=False, true_classes=r["true_classes"]))
    if with_real and half in ("report", "all"):
        for s in run._scenes():
            if s["name"] in ("sample_rgbn", "sample_rgb", "zion_landsat8"):
                scenes.append(dict(name=s["name"], image=Path(s["image"]), classes=Path(s["classes"]), half="report",
                                   real=True, true_classes=run._true_classes(s["classes"])))
    return scenes


def bank_id(bank: Path) -> str:
    """Short SHA-1 of bank.json and every scene and truth file: rows compare only on the same bank."""
    digest = hashlib.sha1((bank / "bank.json").read_bytes())
    for r in json.loads((bank / "bank.json").read_text())["scenes"]:
        for key in ("image", "truth"):
            digest.update((bank / r[key]).read_bytes())
    return digest.hexdigest()[:10]


def _read_truth(path: Path, shape) -> tuple[np.ndarray, float | None]:
    with rasterio.open(path) as src:
        truth, nodata = src.read(1), src.nodata
    if truth.shape != tuple(shape):
        raise SystemExit(f"{path}: truth {truth.shape} is not on the image grid {tuple(shape)}")
    return truth, nodata


def _scores(pred: np.ndarray, truth: np.ndarray, truth_nodata, pred_nodata=-1) -> dict:
    from geoalps.evaluation import contingency, pseudo_label_scores

    r = pseudo_label_scores(*contingency(pred, truth, pred_nodata=pred_nodata, truth_nodata=truth_nodata))
    return {"m2o": r["many_to_one_miou"], "hung": r["hungarian_miou"], "nmi": r["nmi"]}


# -- region baselines ------------------------------------------------------------------------
def standardised(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(pixels, bands) float64 of the valid pixels, standardised as run.pixel_kmeans does."""
    from sklearn.preprocessing import StandardScaler

    x = data.reshape(data.shape[0], -1).T[valid.ravel()].astype(np.float64)
    return StandardScaler().fit_transform(x)


def region_means(regions: np.ndarray, x: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(region ids, mean standardised bands (n, B), valid pixel count) of the regions (id > 0)."""
    ids = regions[valid].astype(np.int64)
    keep = ids > 0
    ids, x = ids[keep], x[keep]
    present, index = np.unique(ids, return_inverse=True)
    count = np.bincount(index, minlength=present.size).astype(np.float64)
    means = np.stack([np.bincount(index, weights=x[:, b], minlength=present.size) for b in range(x.shape[1])], 1)
    return present, means / count[:, None], count


def region_kmeans(regions: np.ndarray, x: np.ndarray, valid: np.ndarray, k: int, seed: int,
                  weighted: bool) -> np.ndarray:
    """Pixel labels (-1 outside every region) from k-means on the regions' band means."""
    from sklearn.cluster import KMeans

    ids, means, count = region_means(regions, x, valid)
    labels = np.full(regions.shape, -1, np.int32)
    if ids.size == 0:
        return labels
    n = min(k, ids.size)
    fitted = KMeans(n_clusters=n, random_state=seed, n_init="auto").fit(means, sample_weight=count if weighted else None)
    lookup = np.full(int(regions.max()) + 1, -1, np.int32)
    lookup[ids] = fitted.labels_
    inside = regions > 0
    labels[inside] = lookup[regions[inside]]
    return labels


def pixel_baseline(scene: dict, k: int, seed: int, work: Path, cache: Path) -> dict:
    """run.py's per-pixel k-means scores (m2o, hung, nmi), cached in ``cache/pixel_cache`` by the
    scene's and truth's bytes, K, seed and scikit-learn version: it depends on none of geoalps, and takes up to ~10 s a run."""
    import sklearn

    image = Path(scene["image"])
    path = cache / "pixel_cache" / f"{scene['name']}.{_digest(image, scene['classes'])}.k{k}.s{seed}.sklearn{sklearn.__version__}.json"
    if path.exists():
        return json.loads(path.read_text())
    scores = run._classes(run.pixel_kmeans(image, k, seed, work / "pixel.tif"), scene["classes"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores))
    return scores


def _digest(*paths: Path) -> str:
    """Short SHA-1 of files' bytes: cached figures follow the scene's content, not its file time."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


# -- OTB anchor ------------------------------------------------------------------------------
def otb_range(data: np.ndarray, valid: np.ndarray) -> float:
    """Norm of the bands' 2-98 % ranges over valid pixels, in the image's units."""
    x = data.reshape(data.shape[0], -1)[:, valid.ravel()].astype(np.float64)
    lo, hi = np.percentile(x, [2, 98], axis=1)
    return float(np.sqrt(np.sum((hi - lo) ** 2)))


def otb_segments(image: Path, name: str, cache: Path, spatialr: int, ranger: float, minsize: int) -> np.ndarray | None:
    """OTB LargeScaleMeanShift segment ids of the scene (cached by scene file and settings), None without OTB."""
    exe = shutil.which(OTB_APP)
    if exe is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{name}.{_digest(image)}.s{spatialr}.r{ranger:.6g}.m{minsize}.tif"
    if not out.exists():
        env = dict(os.environ, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1", OTB_MAX_RAM_HINT="256")
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / "seg.tif"
            # run in the temporary folder: LargeScaleMeanShift writes its tile files to the working
            # directory (two runs there at once overwrite each other's, and a failed run leaves them)
            subprocess.run([exe, "-in", str(Path(image).resolve()), "-spatialr", str(spatialr),
                            "-ranger", f"{ranger:.6g}",
                            "-minsize", str(minsize), "-tilesizex", "1024", "-tilesizey", "1024", "-mode", "raster",
                            "-mode.raster.out", str(part), "uint32", "-cleanup", "true"],
                           check=True, capture_output=True, env=env, cwd=tmp)
            shutil.move(str(part), out)
    with rasterio.open(out) as src:
        return src.read(1).astype(np.int64) + 1  # ids from 1: 0 means "no region"


# -- one scene ---------------------------------------------------------------------------------
def label_run(image: Path, k: int, seed: int, work: Path, options: dict) -> tuple[Path, Path, dict, float]:
    """The default geoalps run (plus ``options``): (GeoPackage, label raster, stats, wall s)."""
    import geoalps

    gpkg, tif = work / f"{image.stem}.k{k}.s{seed}.gpkg", work / f"{image.stem}.k{k}.s{seed}.tif"
    t0 = time.perf_counter()
    result = geoalps.label([str(image)], gpkg, raster_out=tif, classes=k, seed=seed, workers=1, overwrite=True,
                           quiet=True, **options)
    return gpkg, tif, result.stats, time.perf_counter() - t0


def scene_rows(scene: dict, seeds: list[int], mults: list[int], options: dict, otb: bool, cache: Path,
               base: dict, emit=None) -> list[dict]:
    """Every (K, seed) row of one scene."""
    from geoalps.evaluation.oracle import burn_regions, segment_oracle
    from geoalps.evaluation.truth import Grid

    image = Path(scene["image"])
    data, valid, _ = run._read(image)
    truth, t_nodata = _read_truth(scene["classes"], valid.shape)
    x = standardised(data, valid)
    with rasterio.open(scene["classes"]) as src:
        grid = Grid.of(src)
    otb_sets = []
    if otb:
        ranger_unit = otb_range(data, valid)
        for s, r, m in OTB_GRID:
            seg = otb_segments(image, scene["name"], cache / "otb_cache", s, r * ranger_unit, m)
            if seg is None:
                break
            seg[~valid] = 0
            otb_sets.append(((s, r, m), seg))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for mult in mults:
            k = mult * scene["true_classes"]
            for seed in seeds:
                gpkg, tif, stats, wall = label_run(image, k, seed, work, options)
                row = dict(base, scene=scene["name"], real=scene["real"], half=scene["half"], K=k, mult=mult, seed=seed,
                           true_classes=scene["true_classes"], objects=int(stats.get("objects", 0)),
                           tiles=stats.get("tiles"), seconds=wall,
                           tile_seconds=stats.get("tile_seconds", 0.0) / max(1, stats.get("tiles", 1)))
                row.update(run._classes(tif, scene["classes"]))
                t0 = time.perf_counter()
                regions = burn_regions(gpkg, grid)
                oracle = segment_oracle(regions, truth, truth_nodata=t_nodata)
                row.update(oracle_m2o=oracle["segment_oracle_miou"], oracle_acc=oracle["segment_oracle_pixel_accuracy"],
                           regions=oracle["regions"])
                for weighted, key in ((False, "region_km"), (True, "region_kmw")):
                    s = _scores(region_kmeans(regions, x, valid, k, seed, weighted), truth, t_nodata)
                    row.update({f"{key}_{m}": v for m, v in s.items()})
                row.update({f"pixel_{m}": v for m, v in pixel_baseline(scene, k, seed, work, cache).items()})
                if otb_sets:
                    m2o = []
                    for params, seg in otb_sets:
                        m2o.append((_scores(region_kmeans(seg, x, valid, k, seed, False), truth, t_nodata)["m2o"],
                                    params))
                    row.update(otb_m2o_median=float(statistics.median(v for v, _ in m2o)),
                               otb_m2o_best=max(m2o)[0], otb_best=list(max(m2o)[1]))
                row["score_seconds"] = time.perf_counter() - t0
                rows.append(row)
                if emit:
                    emit(row)
    return rows


# -- table -------------------------------------------------------------------------------------
def _git_commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _stat(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return (float(np.mean(vals)), float(min(vals)), float(max(vals))) if vals else None


def _cell(s) -> str:
    return "-" if s is None else f"{s[0]:.3f} ({s[1]:.2f}, {s[2]:.2f})"


TABLE_KEYS = (("m2o", "m2o"), ("pixel_m2o", "pixel m2o"), ("hung", "hung"), ("pixel_hung", "pixel hung"),
              ("nmi", "NMI"), ("oracle_m2o", "oracle"), ("region_km_m2o", "region k-means"),
              ("region_kmw_m2o", "region k-means (area)"), ("otb_m2o_median", "OTB median"),
              ("otb_m2o_best", "OTB best"))


def table(rows: list[dict]) -> str:
    """Mean (min, max) over seeds per scene and K, then issue 25's targets as pass / fail."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["scene"], r["K"]), []).append(r)
    head = "| scene | half | K | seeds | " + " | ".join(t for _, t in TABLE_KEYS) + " | d | s/tile |"
    lines = [head, "|" + "---|" * (len(TABLE_KEYS) + 6)]
    for (scene, k), rs in sorted(groups.items(), key=lambda g: (g[1][0]["real"], g[0])):
        m, p = _stat(rs, "m2o"), _stat(rs, "pixel_m2o")
        d = f"{m[0] - p[0]:+.3f}" if m and p else "-"
        half = rs[0]["half"] + (" real" if rs[0]["real"] else "")
        lines.append(f"| {scene} | {half} | {k} | {len(rs)} | " + " | ".join(_cell(_stat(rs, key)) for key, _ in TABLE_KEYS)
                     + f" | {d} | {_stat(rs, 'tile_seconds')[0]:.2f} |")
    return "\n".join(lines + [""] + targets(groups))


def targets(groups: dict) -> list[str]:
    """Issue 25's targets, one line each, with the scenes that miss them."""
    def mean(rs, key):
        s = _stat(rs, key)
        return s[0] if s else None

    by_scene: dict = {}
    for (scene, _), rs in groups.items():
        by_scene.setdefault(scene, {})[rs[0]["mult"]] = rs
    out = []

    def check(label, scenes, test):
        misses, tested = [], 0
        for scene in scenes:
            verdict = test(by_scene[scene])
            if verdict is None:
                continue
            tested += 1
            if verdict is not True:
                misses.append(f"{scene} {verdict}")
        status = "n/a" if tested == 0 else ("PASS" if not misses else "FAIL")
        out.append(f"- {status} {label} ({tested} scenes)" + (": " + "; ".join(misses) if misses else ""))

    def at(mult, key, other, margin=0.0):
        def test(ks):
            rs = ks.get(mult)
            a, b = (mean(rs, key), mean(rs, other)) if rs else (None, None)
            if a is None or b is None:
                return None
            return True if a >= b + margin - 1e-12 else f"{a:.4f} < {b + margin:.4f}"
        return test

    for half in ("selection", "report"):
        syn = sorted(s for s, ks in by_scene.items() if not _first(ks)["real"] and _first(ks)["half"] == half)
        if not syn:
            continue
        out.append(f"Targets, synthetic {half} half ({len(syn)} scenes):")
        check(f"m2o at K >= pixel k-means + {GAIN_AT_K}", syn, at(1, "m2o", "pixel_m2o", GAIN_AT_K))
        check("m2o at 2K >= pixel k-means", syn, at(2, "m2o", "pixel_m2o"))
        check("Hungarian at K >= pixel k-means", syn, at(1, "hung", "pixel_hung"))
        gains = [mean(by_scene[s][1], "m2o") - mean(by_scene[s][1], "pixel_m2o") for s in syn
                 if 1 in by_scene[s] and mean(by_scene[s][1], "pixel_m2o") is not None]
        if gains:
            med = float(np.median(gains))
            out.append(f"- {'PASS' if med >= MEDIAN_GAIN_AT_K else 'FAIL'} median gain at K {med:+.3f} "
                       f">= +{MEDIAN_GAIN_AT_K}")

        def oracle_ok(ks):
            vals = [mean(rs, "oracle_m2o") for rs in ks.values()]
            vals = [v for v in vals if v is not None]
            return None if not vals else (True if min(vals) >= ORACLE_MIN else f"{min(vals):.3f}")
        check(f"oracle ceiling >= {ORACLE_MIN}", syn, oracle_ok)
        check("m2o at K >= OTB median", syn, at(1, "m2o", "otb_m2o_median"))
        check("m2o at 2K >= OTB median", syn, at(2, "m2o", "otb_m2o_median"))
    real = sorted(s for s, ks in by_scene.items() if _first(ks)["real"])
    if real:
        out.append(f"Targets, real scenes ({len(real)}):")
        check("m2o at K >= pixel k-means", real, at(1, "m2o", "pixel_m2o"))
        check("m2o at 2K >= pixel k-means", real, at(2, "m2o", "pixel_m2o"))
        check("m2o at K >= OTB median", real, at(1, "m2o", "otb_m2o_median"))
        check("m2o at 2K >= OTB median", real, at(2, "m2o", "otb_m2o_median"))
    return out


def _first(ks: dict) -> dict:
    return next(iter(ks.values()))[0]


# -- main --------------------------------------------------------------------------------------
def label_options(items: list[str], parser: argparse.ArgumentParser) -> dict:
    """``--label-option KEY=VALUE`` items as keyword arguments of ``geoalps.label``: values read
    as JSON (numbers, true/false, null, lists), else as text (``cluster_lab.py`` and
    ``tile_time.py`` read theirs here too)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--label-option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def _line(r: dict) -> str:
    f = run._f
    return (f"{r['tag']} {r['scene']:20s} K={r['K']:<3d} s{r['seed']} m2o {f(r['m2o'])} hung {f(r['hung'])} "
            f"oracle {f(r['oracle_m2o'])} regkm {f(r['region_km_m2o'])}/{f(r['region_kmw_m2o'])} "
            f"| pixel {f(r['pixel_m2o'])} | otb {f(r.get('otb_m2o_median'))} | {r['regions']} regions "
            f"{r['tile_seconds']:.2f} s/tile")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half", choices=("selection", "report", "all"), default="selection")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--mult", default="1,2", type=lambda v: [int(x) for x in v.split(",")],
                        help="K as multiples of the number of true classes (default 1,2)")
    parser.add_argument("--scenes", default=None, help="comma-separated names (default: all of the half)")
    parser.add_argument("--label-option", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to geoalps.label (repeatable), e.g. min_area_px=30")
    parser.add_argument("--no-real", action="store_true", help="leave out the real scenes of the report half")
    parser.add_argument("--no-otb", action="store_true", help="leave out the OTB anchor")
    parser.add_argument("--bank", type=Path, default=BANK)
    parser.add_argument("--tag", default="current")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--jobs", type=int, default=1, help="scenes in parallel (default 1)")
    parser.add_argument("--table", metavar="TAG", help="only print the table of TAG's rows in --json")
    args = parser.parse_args(argv)
    if args.table:
        with open(args.json) as f:
            rows = [r for r in map(json.loads, f) if r["tag"] == args.table]
        print(table(rows))
        return 0
    options = label_options(args.label_option, parser)
    seeds = [int(s) for s in args.seeds.split(",")]
    scenes = bank_scenes(args.bank, args.half, not args.no_real)
    if args.scenes:
        wanted = set(args.scenes.split(","))
        scenes = [s for s in scenes if s["name"] in wanted]
    otb = not args.no_otb
    if otb and shutil.which(OTB_APP) is None:
        print(f"notice: {OTB_APP} not found; the OTB anchor is left out", file=sys.stderr)
        otb = False
    import geoalps

    base = {"tag": args.tag, "commit": _git_commit(), "bank": bank_id(args.bank), "label_options": options}
    print(f"geoalps from {Path(geoalps.__file__).parent}; commit {base['commit']}; tag {args.tag}; "
          f"{len(scenes)} scenes; options {options or 'defaults'}", file=sys.stderr)
    cache = args.bank  # pixel k-means scores and OTB segmentations, reused by later runs
    started = time.perf_counter()

    def emit(row):
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(_line(row), flush=True)

    rows = []
    if args.jobs <= 1:
        for scene in scenes:
            rows += scene_rows(scene, seeds, args.mult, options, otb, cache, base, emit)
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(scene_rows, s, seeds, args.mult, options, otb, cache, base) for s in scenes]
            for future in futures:
                for row in future.result():
                    emit(row)
                    rows.append(row)
    import resource

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    print(f"total {time.perf_counter() - started:.0f} s wall, {cpu:.0f} s CPU (with OTB)", file=sys.stderr)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
