"""Clustering variants on fixed regions (issue 25): which K-class clustering of the same regions
scores best, without re-running the engine for every variant and seed.

For each scene of the bank's ``--half`` the default ``geoalps.label`` run (plus ``--label-option``)
is made once (K = C, seed 0: the engine's regions depend on neither) and its polygons are burnt on
the scene grid. Each region gets the features the pipeline computes (stretched band means and the
index block, :func:`geoalps.objects.features.spectral_indices`) and its pixel area; then every
variant of :data:`VARIANTS` clusters them at K = C and 2C for each seed, and the regions' classes
are scored as ``bank.py`` scores the output (many-to-one and Hungarian mIoU). The regions of a
scene are cached in ``out/lab_cache`` (by the scene's bytes, the engine's code -- classical.py
and options.py -- and the options), so a rerun costs only the clustering. The whole pipeline's features come tile by tile; here a scene is one batch, so the
``current`` variant is close to, not equal to, ``bank.py``'s m2o (printed beside it).

    .venv/bin/python benchmarks/label_quality/cluster_lab.py --half selection --tag lab1
    .venv/bin/python benchmarks/label_quality/cluster_lab.py --table lab1
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bank  # noqa: E402  (sibling script: scenes, scorers)

RESULTS = HERE / "cluster_lab.results.jsonl"


# -- regions and their features ------------------------------------------------------------------
def scene_regions(scene: dict, options: dict, cache: Path) -> np.ndarray:
    """Region ids (0: under no polygon) of the default run's output on the scene grid (cached)."""
    from geoalps.evaluation.oracle import burn_regions
    from geoalps.evaluation.truth import Grid

    engine_code = bank._digest(bank.ROOT / "geoalps" / "engines" / "classical.py", bank.ROOT / "geoalps" / "options.py")
    key = hashlib.sha1((bank._digest(Path(scene["image"])) + engine_code
                        + json.dumps(options, sort_keys=True)).encode()).hexdigest()[:12]
    path = cache / f"{scene['name']}.{key}.npy"
    if path.exists():
        return np.load(path)
    with tempfile.TemporaryDirectory() as tmp:
        gpkg, _, _, _ = bank.label_run(Path(scene["image"]), scene["true_classes"], 0, Path(tmp), options)
        with rasterio.open(scene["classes"]) as src:
            grid = Grid.of(src)
        regions = burn_regions(gpkg, grid).astype(np.int32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, regions)
    return regions


def pixel_features(image: Path, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valid pixels, B) stretched band values, (valid pixels, 2) index block as the pipeline
    computes them, and the stretch and band roles."""
    from geoalps.inputs.scene import open_scene
    from geoalps.objects.features import spectral_indices

    scene = open_scene(str(image))
    low, high = np.asarray(scene.stats.low, np.float64), np.asarray(scene.stats.high, np.float64)
    x = (data.reshape(data.shape[0], -1).T[valid.ravel()].astype(np.float64) - low) / (high - low)
    x = np.nan_to_num(x)
    names = tuple(scene.band_roles.names)[: data.shape[0]]
    return x, spectral_indices(x, low, high, names, data.shape[0]).astype(np.float64), (low, high, names)


# -- variants ------------------------------------------------------------------------------------
def online(means, index, area, k, seed, **kw):
    from geoalps.clustering.kmeans import OnlineKMeans

    blocks = {"spectral": means.shape[1], "index": index.shape[1]}
    model = OnlineKMeans(k, blocks, seed=seed, **kw)
    x = np.hstack([means, index])
    model.partial_fit(x, sample_weight=area)
    model.finish()
    return model.predict(x)


def prepared(means, index, area, index_weight=1.0, weighted_scaler=False):
    from sklearn.preprocessing import StandardScaler

    x = np.hstack([means, index])
    scaler = StandardScaler().fit(x, sample_weight=area if weighted_scaler else None)
    w = np.concatenate([np.full(means.shape[1], 1 / np.sqrt(means.shape[1])),
                        np.full(index.shape[1], index_weight / np.sqrt(index.shape[1]))])
    return scaler.transform(x) * w


def full_kmeans(means, index, area, k, seed, **kw):
    from sklearn.cluster import KMeans

    x = prepared(means, index, area, **kw)
    n = min(k, len(np.unique(x, axis=0)))
    return KMeans(n_clusters=n, random_state=seed, n_init=3).fit_predict(x, sample_weight=area)


def over_ward(means, index, area, k, seed, over=4, merge="ward", **kw):
    """Full (batch) k-means of over x K centres on prepared features, then the library's merge."""
    from sklearn.cluster import KMeans

    from geoalps.clustering.kmeans import kmeans_merge, ward_merge

    x = prepared(means, index, area, **kw)
    n = min(over * k, len(np.unique(x, axis=0)))
    fitted = KMeans(n_clusters=n, random_state=seed, n_init=3).fit(x, sample_weight=area)
    mass = np.bincount(fitted.labels_, weights=area, minlength=n)
    mapping = ward_merge(fitted.cluster_centers_, mass, k) if merge == "ward" else kmeans_merge(fitted.cluster_centers_, mass, k, seed)
    return mapping[fitted.labels_]


def online_linkage(means, index, area, k, seed, method="centroid", over=4):
    """The library's online fine centres, merged to K by scipy hierarchical ``method`` on the
    centres alone (mass ignored except by 'weighted ward' variants)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    from geoalps.clustering.kmeans import OnlineKMeans, _number_by_lowest

    blocks = {"spectral": means.shape[1], "index": index.shape[1]}
    model = OnlineKMeans(k, blocks, seed=seed, over_cluster=over)
    x = np.hstack([means, index])
    model.partial_fit(x, sample_weight=area)
    model.finish()
    centres = model.kmeans.cluster_centers_
    fine = model.kmeans.predict(model._prepare(x))
    if len(centres) <= k:
        return fine
    tree = linkage(centres, method=method)
    group = fcluster(tree, t=k, criterion="maxclust")
    return _number_by_lowest(group)[fine]


VARIANTS = {
    "current": lambda m, i, a, k, s: online(m, i, a, k, s),
    "online_oc1": lambda m, i, a, k, s: online(m, i, a, k, s, over_cluster=1),
    "online_oc2": lambda m, i, a, k, s: online(m, i, a, k, s, over_cluster=2),
    "online_kmerge": lambda m, i, a, k, s: online(m, i, a, k, s, merge="kmeans"),
    "km_direct": lambda m, i, a, k, s: full_kmeans(m, i, a, k, s),
    "km_direct_wscale": lambda m, i, a, k, s: full_kmeans(m, i, a, k, s, weighted_scaler=True),
    "km_direct_idx0.5": lambda m, i, a, k, s: full_kmeans(m, i, a, k, s, index_weight=0.5),
    "km_direct_idx0": lambda m, i, a, k, s: full_kmeans(m, i, a, k, s, index_weight=0.0),
    "km4_ward": lambda m, i, a, k, s: over_ward(m, i, a, k, s),
    "km4_ward_wscale": lambda m, i, a, k, s: over_ward(m, i, a, k, s, weighted_scaler=True),
    "km4_ward_idx0.5": lambda m, i, a, k, s: over_ward(m, i, a, k, s, index_weight=0.5),
    "km4_kmerge": lambda m, i, a, k, s: over_ward(m, i, a, k, s, merge="kmeans"),
    "online_centroid": lambda m, i, a, k, s: online_linkage(m, i, a, k, s, "centroid"),
    "online_average": lambda m, i, a, k, s: online_linkage(m, i, a, k, s, "average"),
    "online_complete": lambda m, i, a, k, s: online_linkage(m, i, a, k, s, "complete"),
    "online_ward_unweighted": lambda m, i, a, k, s: online_linkage(m, i, a, k, s, "ward"),
    "online8_average": lambda m, i, a, k, s: online_linkage(m, i, a, k, s, "average", over=8),
}


def pixel_majority(x_pix, idx_pix, region_of_pixel, n_regions, k, seed, index_weight=1.0, sample=50000):
    """k-means of a sample of pixels (prepared as the regions are), each region takes the
    majority class of its pixels."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    x = np.hstack([x_pix, idx_pix])
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    scaler = StandardScaler().fit(x[pick])
    w = np.concatenate([np.full(x_pix.shape[1], 1 / np.sqrt(x_pix.shape[1])),
                        np.full(idx_pix.shape[1], index_weight / np.sqrt(idx_pix.shape[1]))])
    fitted = KMeans(n_clusters=k, random_state=seed, n_init=3).fit(scaler.transform(x[pick]) * w)
    labels = fitted.predict(scaler.transform(x) * w)
    votes = np.zeros((n_regions, k))
    inside = region_of_pixel >= 0
    np.add.at(votes, (region_of_pixel[inside], labels[inside]), 1)
    return votes.argmax(axis=1)


PIXEL_VARIANTS = {
    "pixel_majority": lambda *a: pixel_majority(*a),
    "pixel_majority_idx0.5": lambda *a: pixel_majority(*a, index_weight=0.5),
}


def scene_rows(scene: dict, seeds, mults, options, cache: Path, variants, tag: str, commit: str, emit) -> None:
    image = Path(scene["image"])
    data, valid, _ = bank.run._read(image)
    truth, t_nodata = bank._read_truth(scene["classes"], valid.shape)
    regions = scene_regions(scene, options, cache)
    from geoalps.evaluation.oracle import segment_oracle
    oracle = segment_oracle(regions, truth, truth_nodata=t_nodata)["segment_oracle_miou"]
    x_pix, idx_pix, _ = pixel_features(image, data, valid)
    reg_valid = regions[valid]
    present, region_of_pixel = np.unique(reg_valid, return_inverse=True)
    has_zero = present[0] == 0 if present.size else False
    region_of_pixel = region_of_pixel - (1 if has_zero else 0)  # -1: under no region
    n = present.size - (1 if has_zero else 0)
    area = np.bincount(region_of_pixel[region_of_pixel >= 0], minlength=n).astype(np.float64)
    inside = region_of_pixel >= 0

    def region_mean(values):
        return np.stack([np.bincount(region_of_pixel[inside], weights=values[inside, b], minlength=n)
                         for b in range(values.shape[1])], 1) / np.maximum(area, 1)[:, None]

    means = region_mean(x_pix)
    from geoalps.inputs.scene import open_scene
    from geoalps.objects.features import spectral_indices
    sc = open_scene(str(image))
    low, high = np.asarray(sc.stats.low, np.float64), np.asarray(sc.stats.high, np.float64)
    index = spectral_indices(means, low, high, tuple(sc.band_roles.names)[: data.shape[0]], data.shape[0]).astype(np.float64)
    for mult in mults:
        k = mult * scene["true_classes"]
        for seed in seeds:
            for name in variants:
                if name in PIXEL_VARIANTS:
                    cls = PIXEL_VARIANTS[name](x_pix, idx_pix, region_of_pixel, n, k, seed)
                else:
                    cls = VARIANTS[name](means, index, area, k, seed)
                pred = np.full(valid.shape, -1, np.int32)
                flat = np.full(reg_valid.shape, -1, np.int32)
                flat[inside] = np.asarray(cls)[region_of_pixel[inside]]
                pred[valid] = flat
                s = bank._scores(pred, truth, t_nodata)
                emit(dict(tag=tag, commit=commit, scene=scene["name"], half=scene["half"], K=k, mult=mult, seed=seed,
                          variant=name, regions=int(n), oracle=oracle, options=options, **s))


def table(rows: list[dict]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["scene"], r["mult"]), {}).setdefault(r["variant"], []).append(r["m2o"])
    lines = ["| scene | mult | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    per_variant: dict = {v: [] for v in variants}
    for (scene, mult), by in sorted(groups.items()):
        cells = []
        for v in variants:
            vals = by.get(v, [])
            cells.append(f"{np.mean(vals):.3f}" if vals else "-")
            if vals:
                per_variant[v].append((mult, np.mean(vals) - np.mean(by["current"])))
        lines.append(f"| {scene} | {mult} | " + " | ".join(cells) + " |")
    for mult in (1, 2):
        gains = {v: [d for m, d in per_variant[v] if m == mult] for v in variants}
        lines.append(f"| mean gain vs current, mult {mult} | | " + " | ".join(
            f"{np.mean(gains[v]):+.3f}" if gains[v] else "-" for v in variants) + " |")
        lines.append(f"| worst loss vs current, mult {mult} | | " + " | ".join(
            f"{min(gains[v]):+.3f}" if gains[v] else "-" for v in variants) + " |")
    return "\n".join(lines)


def run_lab(results: Path, tag_to_print: str | None, table_fn, half: str, names: str | None, run_scene) -> int:
    """The labs' common loop: print ``table_fn`` of the rows of ``results`` tagged
    ``tag_to_print`` (nothing run), or run ``run_scene(scene, commit, emit)`` on every bank scene of
    ``half`` (``names``: comma-separated, else all), appending each emitted row to ``results``, then
    print the table of the new rows."""
    if tag_to_print:
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        print(table_fn([r for r in rows if r["tag"] == tag_to_print]))
        return 0
    scenes = bank.bank_scenes(bank.BANK, half, with_real=False)
    if names:
        scenes = [s for s in scenes if s["name"] in names.split(",")]
    commit = bank._git_commit()
    rows = []

    def emit(row):
        rows.append(row)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")

    for scene in scenes:
        run_scene(scene, commit, emit)
        print(f"{scene['name']} done", flush=True)
    print(table_fn(rows))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--half", default="selection")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--mults", default="1,2")
    p.add_argument("--variants", default=",".join(list(VARIANTS) + list(PIXEL_VARIANTS)))
    p.add_argument("--scenes", default=None)
    p.add_argument("--label-option", action="append", default=[])
    p.add_argument("--tag", default="lab")
    p.add_argument("--table", default=None, help="print the table of the rows with this tag")
    args = p.parse_args(argv)
    options = bank.label_options(args.label_option, p)
    seeds, mults = [int(s) for s in args.seeds.split(",")], [int(m) for m in args.mults.split(",")]
    return run_lab(RESULTS, args.table, table, args.half, args.scenes,
                   lambda scene, commit, emit: scene_rows(scene, seeds, mults, options, bank.BANK / "lab_cache",
                                                          args.variants.split(","), args.tag, commit, emit))


if __name__ == "__main__":
    raise SystemExit(main())
