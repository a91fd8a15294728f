"""Pseudo-label quality against ground truth, with the obvious baselines in the same run (issue 13).

Every scene with ground truth in ``../shared/realdata`` and ``sample_data/`` is labelled with the
default run (classical engine, ``--features auto`` = spectral) and scored with geoalps.evaluation:

- land cover (``sample_data/*.gt.tif``, Landsat-8 Zion + NLCD, and the building masks as a
  2-class raster): many-to-one and Hungarian mIoU and NMI at K = number of true classes and 2K;
- objects: building recall at IoU >= 0.5 for footprints of >= 30 px (aerial masks, SpaceNet-4
  Atlanta footprints and mask, SpaceNet-2 Las Vegas polygons); NEON tree crowns by box IoU >= 0.4;
- time per tile (geoalps' own ``tile_seconds`` / tiles).

Baselines, same scene, same K and seed: per-pixel k-means (scikit-learn MiniBatchKMeans on the
standardised values of all bands) and felzenszwalb alone (skimage, at the classical engine's
fixed settings of before issue 13: scale ``classical_scale``, its sigma, min_size 32 px, masks of
64 px and up, on the 8-bit RGB stretch), for object recall.

    .venv/bin/python benchmarks/label_quality/run.py [--seeds 0,1,2] [--scenes rgbn,zion]
        [--kmeans over_cluster=8,steps=10,merge=kmeans] [--tag NAME] [--json PATH]
        [--engine sam --checkpoint sam_vit_b_01ec64.pth] [--label-option classical_split=true]

``--label-option KEY=VALUE`` (repeatable; values read as JSON, else text, as ``bank.py`` reads
them) goes to ``geoalps.label`` and into each row. ``--kmeans`` sets the clustering constants of geoalps.clustering.kmeans for a comparison (ignored
by code that has none). Results go to benchmarks/label_quality/results.jsonl (appended, one line
per scene, K and seed) and a table on stdout. No scene is cropped: the largest (Zion,
1428 x 1128) is four 1024 px tiles.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "realdata"
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import commit  # noqa: E402
#: Object matching: buildings by mask IoU over footprints of at least BUILDING_MIN_PX pixels,
#: tree crowns by box IoU (issue 13's definitions).
BUILDING_IOU, BUILDING_MIN_PX, TREE_BOX_IOU = 0.5, 30, 0.4


def _scenes() -> list[dict]:
    """Scene records: image, truth for classes (raster, n classes) and/or objects."""
    a, m = REAL / "aerial", REAL / "multispectral"
    out = [
        dict(name="sample_rgbn", image=ROOT / "sample_data/scene_rgbn_u16.tif",
             classes=ROOT / "sample_data/scene_rgbn_u16.gt.tif"),
        dict(name="sample_rgb", image=ROOT / "sample_data/scene_rgb_u8.tif",
             classes=ROOT / "sample_data/scene_rgb_u8.gt.tif"),
        dict(name="zion_landsat8", image=m / "landsat8_zion_bgrn_u16.tif", classes=m / "landsat8_zion.nlcd8.tif"),
        dict(name="aerial_030m_1", image=a / "aerial_rgb_030m_1.tif", classes=a / "aerial_rgb_030m_1.buildings.tif",
             buildings=a / "aerial_rgb_030m_1.buildings.tif"),
        dict(name="aerial_015m_2", image=a / "aerial_rgb_015m_2.tif", classes=a / "aerial_rgb_015m_2.buildings.tif",
             buildings=a / "aerial_rgb_015m_2.buildings.tif"),
        dict(name="spacenet4_atlanta", image=m / "spacenet4_atlanta_rgbn.tif",
             classes=m / "spacenet4_atlanta_rgbn.buildings.tif",
             buildings=m / "spacenet4_atlanta.buildings.geojson",
             buildings_mask=m / "spacenet4_atlanta_rgbn.buildings.tif"),
        dict(name="spacenet2_lasvegas", image=m / "spacenet2_lasvegas_wv3_rgbn.tif",
             buildings=m / "spacenet2_lasvegas.buildings.gpkg"),
        dict(name="neon_osbs", image=a / "neon_osbs_029_rgb.tif", trees=a / "neon_osbs_029_rgb.trees.csv"),
        dict(name="neon_sjer", image=a / "neon_sjer_477_rgb.tif", trees=a / "neon_sjer_477_rgb.trees.csv"),
    ]
    return [s for s in out if Path(s["image"]).exists()]


# -- truth ---------------------------------------------------------------------------------
def _true_classes(path: Path) -> int:
    with rasterio.open(path) as src:
        values = src.read(1)
        nodata = src.nodata
    present = np.unique(values if nodata is None else values[values != nodata])
    return int(len(present))


def _building_objects(scene: dict, key: str = "buildings"):
    """(geometries, sizes in px) of true buildings in the image's CRS."""
    import geopandas as gpd

    from geoalps.evaluation import raster_objects

    path = Path(scene[key])
    with rasterio.open(scene["image"]) as img:
        crs, transform = img.crs, img.transform
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    if path.suffix == ".tif":
        with rasterio.open(path) as src:
            geoms, _, sizes = raster_objects(src.read(1), src.transform, nodata=src.nodata, classes=[1])
        return geoms, sizes
    import shapely

    frame = gpd.read_file(path)
    if frame.crs is not None and crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    # Footprints are clipped to the image: the SpaceNet-4 file holds 64, of which 18 meet the chip.
    with rasterio.open(scene["image"]) as img:
        extent = shapely.box(*img.bounds)
    geoms = shapely.intersection(np.asarray(frame.geometry.values, dtype=object), extent)
    geoms = geoms[~shapely.is_empty(geoms)]
    return geoms, shapely.area(geoms) / pixel_area


def _tree_boxes(scene: dict):
    import shapely

    with rasterio.open(scene["image"]) as img:
        t = img.transform
    boxes = []
    with open(scene["trees"]) as f:
        for row in csv.DictReader(f):
            x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            (ax, ay), (bx, by) = t * (x0, y0), t * (x1, y1)
            boxes.append(shapely.box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)))
    return np.asarray(boxes, dtype=object)


def _objects(scene: dict, polygons) -> dict:
    """Object recall of these polygons against the scene's true objects (None if none)."""
    from geoalps.evaluation import object_recall

    out = {}
    if "buildings" in scene:
        geoms, sizes = _building_objects(scene)
        out["building_recall"] = object_recall(polygons, geoms, BUILDING_IOU, min_size_px=BUILDING_MIN_PX,
                                               sizes_px=sizes)["recall"]
    if "buildings_mask" in scene:
        geoms, sizes = _building_objects(scene, "buildings_mask")
        out["building_recall_mask"] = object_recall(polygons, geoms, BUILDING_IOU, min_size_px=BUILDING_MIN_PX,
                                                    sizes_px=sizes)["recall"]
    if "trees" in scene:
        out["tree_recall"] = object_recall(polygons, _tree_boxes(scene), TREE_BOX_IOU, min_size_px=0, box=True)["recall"]
    return out


def _classes(pred: Path, truth: Path) -> dict:
    from geoalps.evaluation import evaluate_pseudo_labels

    r = evaluate_pseudo_labels(pred, truth)
    return {"m2o": r["many_to_one_miou"], "hung": r["hungarian_miou"], "nmi": r["nmi"]}


# -- baselines -----------------------------------------------------------------------------
def _read(image: Path):
    from geoalps.inputs.scene import valid_pixels

    with rasterio.open(image) as src:
        data = src.read()
        profile = src.profile
        nodata = src.nodata
    return data, valid_pixels(data, nodata), profile


def _write_labels(path: Path, labels: np.ndarray, profile) -> Path:
    prof = dict(driver="GTiff", height=labels.shape[0], width=labels.shape[1], count=1, dtype="int32",
                crs=profile["crs"], transform=profile["transform"], nodata=-1)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(labels.astype(np.int32), 1)
    return path


def pixel_kmeans(image: Path, k: int, seed: int, out: Path) -> Path:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.preprocessing import StandardScaler

    data, valid, profile = _read(image)
    x = data.reshape(data.shape[0], -1).T[valid.ravel()].astype(np.float64)
    x = StandardScaler().fit_transform(x)
    fitted = MiniBatchKMeans(n_clusters=k, random_state=seed).fit(x)  # scikit-learn's defaults
    labels = np.full(valid.shape, -1, np.int32)
    labels[valid] = fitted.labels_
    return _write_labels(out, labels, profile)


def felzenszwalb_polygons(image: Path):
    """Felzenszwalb alone at the classical engine's fixed settings (no resolution rule, RGB, no
    merge), whole scene, as polygons."""
    from skimage.segmentation import felzenszwalb

    from geoalps.engines.classical import REGION_NO_CRS_PX, ClassicalEngine
    from geoalps.evaluation import raster_objects
    from geoalps.inputs.bands import resolve_bands, stretch_to_uint8
    from geoalps.inputs.scene import open_scene, valid_pixels
    from geoalps.options import MIN_AREA_PX_DEFAULT, LabelOptions

    opts = LabelOptions()
    scene = open_scene(str(image))
    with rasterio.open(image) as src:
        data = src.read()
        transform = src.transform
    valid = valid_pixels(data, scene.nodata)
    rgb = stretch_to_uint8(data, valid, resolve_bands(None, scene.count, str(image), scene.band_roles), scene.stats)
    seg = felzenszwalb(rgb, scale=opts.classical_scale, sigma=ClassicalEngine.sigma,
                       min_size=REGION_NO_CRS_PX, channel_axis=-1) + 1
    seg[~valid] = 0
    geoms, _, _ = raster_objects(seg, transform, by="value", min_size_px=MIN_AREA_PX_DEFAULT)
    return geoms


# -- geoalps -------------------------------------------------------------------------------
def run_geoalps(image: Path, k: int, seed: int, work: Path, engine: dict | None = None) -> tuple[Path, object, dict]:
    """The default run (or ``engine``: label options such as ``engine="sam", checkpoint=PATH``)."""
    import geoalps

    gpkg, tif = work / f"{image.stem}.k{k}.s{seed}.gpkg", work / f"{image.stem}.k{k}.s{seed}.tif"
    result = geoalps.label([str(image)], gpkg, raster_out=tif, classes=k, seed=seed, workers=1,
                           overwrite=True, quiet=True, **(engine or {}))
    import geopandas as gpd

    polygons = np.asarray(gpd.read_file(gpkg, layer="masks").geometry.values, dtype=object)
    return tif, polygons, result.stats


def _set_kmeans(spec: str | None) -> dict:
    if not spec:
        return {}
    from geoalps.clustering import kmeans

    out = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        name = {"over_cluster": "OVER_CLUSTER", "steps": "STEPS_PER_BATCH", "merge": "MERGE"}[key]
        setattr(kmeans, name, value if key == "merge" else int(value))
        out[key] = value
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--scenes", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--kmeans", default=None)
    parser.add_argument("--tag", default="current")
    parser.add_argument("--json", default=str(Path(__file__).with_name("results.jsonl")))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--mult", default="1,2", type=lambda v: [int(x) for x in v.split(",")],
                        help="K as multiples of the number of true classes (default 1,2)")
    parser.add_argument("--table", metavar="TAG", help="only print the table of TAG's rows in --json")
    parser.add_argument("--engine", default=None, help="mask engine (default: the default run's, classical)")
    parser.add_argument("--checkpoint", default=None, help="SAM / SAM 2 checkpoint for --engine sam / sam2")
    parser.add_argument("--label-option", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument of geoalps.label (repeatable; values read as JSON, else text)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bank import label_options  # one reading of --label-option

    options = label_options(args.label_option, parser)
    engine = {key: value for key, value in (("engine", args.engine), ("checkpoint", args.checkpoint)) if value}
    engine.update(options)
    if args.table:
        with open(args.json) as f:
            rows = [r for r in map(json.loads, f) if r["tag"] == args.table]
        print(table(rows))
        return 0
    variant = _set_kmeans(args.kmeans)
    seeds = [int(s) for s in args.seeds.split(",")]
    scenes = _scenes()
    if args.scenes:
        wanted = set(args.scenes.split(","))
        scenes = [s for s in scenes if s["name"] in wanted]
    import geoalps

    print(f"geoalps from {Path(geoalps.__file__).parent}; tag {args.tag}; kmeans {variant or 'defaults'}; "
          f"label options {options or 'defaults'}", file=sys.stderr)
    rows = []
    started, measured_commit = time.perf_counter(), commit()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for scene in scenes:
            image = Path(scene["image"])
            n_true = _true_classes(scene["classes"]) if "classes" in scene else None
            ks = [m * n_true for m in args.mult] if n_true else [LabelOptions_default_classes()]
            felz = None
            if not args.no_baselines and ("buildings" in scene or "trees" in scene):
                t0 = time.perf_counter()
                felz = _objects(scene, felzenszwalb_polygons(image))
                felz["seconds"] = time.perf_counter() - t0
            for k in ks:
                # Objects do not depend on K or the seed: object scenes (their building/background
                # mIoU is a side figure) run the first seed only, land-cover scenes every seed.
                object_scene = "buildings" in scene or "trees" in scene
                for seed in (seeds[:1] if object_scene or not n_true else seeds):
                    t0 = time.perf_counter()
                    tif, polygons, stats = run_geoalps(image, k, seed, work, engine)
                    wall = time.perf_counter() - t0
                    row = {"tag": args.tag, "commit": measured_commit, "kmeans": variant, "label_options": options, "scene": scene["name"], "K": k,
                           "engine": stats.get("engine"), "true_classes": n_true, "seed": seed, "objects": int(stats.get("objects", len(polygons))),
                           "tiles": stats.get("tiles"), "seconds": wall,
                           "tile_seconds": stats.get("tile_seconds", 0.0) / max(1, stats.get("tiles", 1))}
                    row.update(_objects(scene, polygons))
                    if n_true:
                        row.update(_classes(tif, scene["classes"]))
                        if not args.no_baselines:
                            base = _classes(pixel_kmeans(image, k, seed, work / "pixel.tif"), scene["classes"])
                            row.update({f"pixel_{key}": v for key, v in base.items()})
                    if felz:
                        row.update({f"felz_{key}": v for key, v in felz.items()})
                    rows.append(row)
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(_line(row), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print()
    print(table(rows))
    return 0


def LabelOptions_default_classes() -> int:
    from geoalps.options import LabelOptions

    return LabelOptions().classes


def _f(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def _line(r: dict) -> str:
    parts = [f"{r['tag']:10s} {r['scene']:18s} K={r['K']:<3d} s{r['seed']}"]
    if "m2o" in r:
        parts.append(f"m2o {_f(r['m2o'])} hung {_f(r['hung'])} nmi {_f(r['nmi'])}")
        if "pixel_m2o" in r:
            parts.append(f"| pixel m2o {_f(r['pixel_m2o'])} hung {_f(r['pixel_hung'])} nmi {_f(r['pixel_nmi'])}")
    for key in ("building_recall", "building_recall_mask", "tree_recall"):
        if key in r:
            parts.append(f"{key} {_f(r[key])}" + (f" (felz {_f(r.get('felz_' + key))})" if "felz_" + key in r else ""))
    parts.append(f"| {r['objects']} obj, {_f(r['tile_seconds'], 2)} s/tile")
    return " ".join(parts)


def table(rows: list[dict]) -> str:
    """Markdown table, mean over seeds per scene and K (min in brackets where several seeds)."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["scene"], r["K"]), []).append(r)
    head = ("| scene | K | m2o | pixel m2o | d | hung | pixel hung | NMI | pixel NMI | "
            "objects recall | felz recall | s/tile | run s |")
    lines = [head, "|" + "---|" * 13]
    for (scene, k), rs in groups.items():
        def mean(key):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return float(np.mean(vals)) if vals else None

        def cell(key):
            m = mean(key)
            vals = [r[key] for r in rs if r.get(key) is not None]
            return _f(m) + (f" ({min(vals):.3f})" if len(vals) > 1 and key == "m2o" else "")

        rec_key = next((key for key in ("building_recall", "tree_recall") if key in rs[0]), None)
        rec = cell(rec_key) if rec_key else "-"
        if "building_recall_mask" in rs[0]:
            rec += f" / mask {cell('building_recall_mask')}"
        felz = _f(mean("felz_" + rec_key)) if rec_key else "-"
        d = (mean("m2o") - mean("pixel_m2o")) if mean("m2o") is not None and mean("pixel_m2o") is not None else None
        lines.append(f"| {scene} | {k} | {cell('m2o')} | {cell('pixel_m2o')} | "
                     f"{'-' if d is None else f'{d:+.3f}'} | {cell('hung')} | {cell('pixel_hung')} | "
                     f"{cell('nmi')} | {cell('pixel_nmi')} | {rec} | {felz} | {_f(mean('tile_seconds'), 2)} | {_f(mean('seconds'), 1)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
