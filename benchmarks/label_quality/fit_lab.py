"""Which regions k-means should learn from when ``--classical-split`` cuts them (issue 25).

For each scene of the bank's ``--half`` the default run's regions and the split run's regions are
made once (``cluster_lab.scene_regions``, cached); each region gets the pipeline's features
(stretched band means + index block) and pixel area. Then, for K = C and 2C and every seed, the
library's ``OnlineKMeans`` learns from one set (``--variants`` FIT:APPLY pairs: ``base`` = the
uncut regions, ``split`` = the pieces, ``both`` = the two sets together, ``refine`` = the uncut
regions then the pieces, ``mixW`` = both sets, the pieces weighing W x their area) and
classifies the regions of the other, scored as ``bank.py`` scores
the output. One batch per scene (the pipeline feeds tiles; the bank's scenes are one tile each).

    .venv/bin/python benchmarks/label_quality/fit_lab.py --half selection --tag fit1
    .venv/bin/python benchmarks/label_quality/fit_lab.py --table fit1
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bank  # noqa: E402  (sibling scripts: scenes, scorers, regions)
import cluster_lab  # noqa: E402

RESULTS = HERE / "fit_lab.results.jsonl"
VARIANTS = "base:base,split:split,base:split,both:split,refine:split"


def region_features(scene: dict, options: dict, data, valid, x_pix, stretch) -> dict:
    """Features, areas and the pixel -> region map of one run's regions on the scene grid."""
    from geoalps.objects.features import spectral_indices

    regions = cluster_lab.scene_regions(scene, options, bank.BANK / "lab_cache")
    flat = regions[valid]
    present, region_of_pixel = np.unique(flat, return_inverse=True)
    has_zero = bool(present.size) and present[0] == 0
    region_of_pixel = region_of_pixel - int(has_zero)
    n = present.size - int(has_zero)
    inside = region_of_pixel >= 0
    area = np.bincount(region_of_pixel[inside], minlength=n).astype(np.float64)
    means = np.stack([np.bincount(region_of_pixel[inside], weights=x_pix[inside, b], minlength=n)
                      for b in range(x_pix.shape[1])], 1) / np.maximum(area, 1)[:, None]
    low, high, names = stretch
    index = spectral_indices(means, low, high, names, data.shape[0]).astype(np.float64)
    return dict(x=np.hstack([means, index]), widths={"spectral": means.shape[1], "index": index.shape[1]},
                area=area, region_of_pixel=region_of_pixel, inside=inside, flat=flat, regions=regions)


def fitted(sets: dict, fit: str, k: int, seed: int):
    from geoalps.clustering.kmeans import OnlineKMeans

    model = OnlineKMeans(k, sets["base"]["widths"], seed=seed)
    if fit == "both" or fit.startswith("mix"):  # mixW: the pieces weigh W x their area
        share = 1.0 if fit == "both" else float(fit[3:])
        model.partial_fit(np.vstack([sets["base"]["x"], sets["split"]["x"]]),
                          sample_weight=np.r_[sets["base"]["area"], share * sets["split"]["area"]])
    else:
        for name in ("base", "split") if fit == "refine" else (fit,):
            model.partial_fit(sets[name]["x"], sample_weight=sets[name]["area"])
    model.finish()
    return model


def scene_rows(scene: dict, seeds, mults, variants, tag: str, commit: str, emit) -> None:
    from geoalps.evaluation.oracle import segment_oracle

    image = Path(scene["image"])
    data, valid, _ = bank.run._read(image)
    truth, t_nodata = bank._read_truth(scene["classes"], valid.shape)
    x_pix, _, stretch = cluster_lab.pixel_features(image, data, valid)
    sets = {"base": region_features(scene, {}, data, valid, x_pix, stretch),
            "split": region_features(scene, {"classical_split": True}, data, valid, x_pix, stretch)}
    oracle = {name: segment_oracle(s["regions"], truth, truth_nodata=t_nodata)["segment_oracle_miou"]
              for name, s in sets.items()}
    for mult in mults:
        k = mult * scene["true_classes"]
        for seed in seeds:
            for fit, apply in variants:
                target = sets[apply]
                classes = np.asarray(fitted(sets, fit, k, seed).predict(target["x"]))
                flat = np.full(target["flat"].shape, -1, np.int32)
                flat[target["inside"]] = classes[target["region_of_pixel"][target["inside"]]]
                pred = np.full(valid.shape, -1, np.int32)
                pred[valid] = flat
                emit(dict(tag=tag, commit=commit, scene=scene["name"], half=scene["half"], K=k, mult=mult,
                          seed=seed, fit=fit, apply=apply, oracle=oracle[apply],
                          **bank._scores(pred, truth, t_nodata)))


def table(rows: list[dict]) -> str:
    variants = list(dict.fromkeys(f"{r['fit']}:{r['apply']}" for r in rows))
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["scene"], r["mult"]), {}).setdefault(f"{r['fit']}:{r['apply']}", []).append(r["m2o"])
    lines = ["| scene | mult | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    gains: dict = {(v, m): [] for v in variants for m in (1, 2)}
    for (scene, mult), by in sorted(groups.items()):
        lines.append(f"| {scene} | {mult} | " + " | ".join(f"{np.mean(by[v]):.3f}" if v in by else "-"
                                                          for v in variants) + " |")
        for v in variants:
            if v in by and "base:base" in by:
                gains[(v, mult)].append(np.mean(by[v]) - np.mean(by["base:base"]))
    for mult in (1, 2):
        lines.append(f"| mean (worst) change against base:base, mult {mult} | | " + " | ".join(
            f"{np.mean(gains[(v, mult)]):+.3f} ({min(gains[(v, mult)]):+.3f})" if gains[(v, mult)] else "-"
            for v in variants) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--half", default="selection", choices=("selection", "report"))
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--mults", default="1,2")
    p.add_argument("--variants", default=VARIANTS, help="FIT:APPLY pairs (FIT: base, split, both, refine, mixW)")
    p.add_argument("--scenes", default=None)
    p.add_argument("--tag", default="fit")
    p.add_argument("--table", default=None, help="print the table of the rows with this tag")
    args = p.parse_args(argv)
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    seeds, mults = [int(s) for s in args.seeds.split(",")], [int(m) for m in args.mults.split(",")]
    return cluster_lab.run_lab(RESULTS, args.table, table, args.half, args.scenes,
                               lambda scene, commit, emit: scene_rows(scene, seeds, mults, variants, args.tag,
                                                                      commit, emit))


if __name__ == "__main__":
    raise SystemExit(main())
