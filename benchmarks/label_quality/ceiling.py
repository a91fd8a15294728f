"""How high can pseudo-classes go on a land-cover scene? A supervised ceiling for the unsupervised figures.

Issue 13 asks for many-to-one mIoU at least 0.10 above per-pixel k-means on every land-cover
scene. This script measures what a *supervised* classifier reaches on the same scene with the
same metric, so the target can be read against it: scikit-learn's
``HistGradientBoostingClassifier`` trained on the true classes of the left half of the scene and
scored on the right half (a spatial split: neighbouring pixels are not independent), with

- ``pixel``: the scene's bands and NDVI / NDWI of each pixel (what pixel k-means sees);
- ``pixel+context``: plus the mean and standard deviation of NIR, NDVI and red in 3, 7 and 15 px
  windows (texture and neighbourhood, what objects can add);
- ``pixel+context, balanced``: the same with class weights inversely proportional to frequency
  (rare classes predicted more often: what many-to-one mIoU over all classes rewards).

Next to them, on the same right half: per-pixel k-means (``run.pixel_kmeans``, K = true classes)
and geoalps's default run (``run.run_geoalps``) on the whole scene. Scores are many-to-one and
Hungarian mIoU (``geoalps.evaluation``) and, for the classifiers, the mIoU with predicted class =
true class ("identity"). Costs: a few minutes of CPU for the classifiers on Zion (1.6 M pixels).

    .venv/bin/python benchmarks/label_quality/ceiling.py [--scene zion_landsat8] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as lq  # noqa: E402  (label_quality/run.py: scenes, pixel k-means, geoalps run)


def _features(data: np.ndarray, roles: dict, context: bool) -> list[np.ndarray]:
    from scipy import ndimage

    r, g, nir = (data[roles[k]] for k in ("red", "green", "nir"))
    ndvi = (nir - r) / np.maximum(nir + r, 1e-9)
    ndwi = (g - nir) / np.maximum(g + nir, 1e-9)
    out = [*data, ndvi, ndwi]
    if context:
        for size in (3, 7, 15):
            for band in (nir, ndvi, r):
                mean = ndimage.uniform_filter(band, size)
                square = ndimage.uniform_filter(band * band, size)
                out += [mean, np.sqrt(np.maximum(square - mean * mean, 0.0))]
    return out


def _scores(pred: np.ndarray, truth: np.ndarray, truth_nodata, scored: np.ndarray) -> dict:
    from geoalps.evaluation.pseudo_labels import contingency, pseudo_label_scores

    held = np.where(scored, truth, truth.dtype.type(truth_nodata))
    r = pseudo_label_scores(*contingency(pred, held, pred_nodata=-1, truth_nodata=truth_nodata))
    return {"m2o": r["many_to_one_miou"], "hung": r["hungarian_miou"]}


def _identity_miou(pred: np.ndarray, truth: np.ndarray, scored: np.ndarray, classes) -> float:
    ious = []
    for c in classes:
        p, t = (pred == c) & scored, (truth == c) & scored
        union = np.count_nonzero(p | t)
        ious.append(np.count_nonzero(p & t) / union if union else 0.0)
    return float(np.mean(ious))


def main(argv=None) -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from geoalps.inputs.bands import scene_band_roles
    from geoalps.inputs.scene import valid_pixels
    from geoalps.objects.features import band_roles

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="zion_landsat8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(Path(__file__).with_name("ceiling.results.jsonl")))
    args = parser.parse_args(argv)
    scene = next(s for s in lq._scenes() if s["name"] == args.scene)
    image, truth_path = Path(scene["image"]), Path(scene["classes"])
    with rasterio.open(image) as src:
        data, nodata = src.read().astype(np.float64), src.nodata
        names = scene_band_roles(src.count, src.descriptions, src.colorinterp, shown=str(image)).names
    with rasterio.open(truth_path) as src:
        truth, truth_nodata = src.read(1), src.nodata
    valid = valid_pixels(data, nodata) & (truth != truth_nodata)
    classes = np.unique(truth[valid])
    k = len(classes)
    right = np.zeros(truth.shape, bool)
    right[:, truth.shape[1] // 2:] = True
    train, scored = valid & ~right, valid & right
    roles = band_roles(names, data.shape[0])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, path in (("pixel k-means", lq.pixel_kmeans(image, k, args.seed, work / "pixel.tif")),
                            ("geoalps default", lq.run_geoalps(image, k, args.seed, work)[0])):
            with rasterio.open(path) as src:
                pred = src.read(1).astype(np.int64)
                pred[pred == (src.nodata if src.nodata is not None else -1)] = -1
            rows.append({"method": label, **_scores(pred, truth, truth_nodata, scored)})
            print(json.dumps(rows[-1]), flush=True)
    for label, context, weight in (("supervised pixel", False, None),
                                   ("supervised pixel+context", True, None),
                                   ("supervised pixel+context, balanced", True, "balanced")):
        stack = np.stack([f[valid] for f in _features(data, roles, context)], axis=1)
        at = train[valid]
        clf = HistGradientBoostingClassifier(max_iter=100, class_weight=weight, random_state=args.seed)
        clf.fit(stack[at], truth[valid][at])
        pred = np.full(truth.shape, -1, np.int64)
        pred[valid] = clf.predict(stack)
        rows.append({"method": label, **_scores(pred, truth, truth_nodata, scored),
                     "identity": _identity_miou(pred, truth, scored, classes)})
        print(json.dumps(rows[-1]), flush=True)
    with open(args.json, "a") as f:
        for row in rows:
            f.write(json.dumps({"scene": args.scene, "K": k, "seed": args.seed, **row}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
