"""Object recall of the classical engine over a grid of its settings, on every object scene (issue 13).

The engine's settings (:class:`geoalps.engines.classical.RegionSettings`: felzenszwalb's scale,
smallest region, smoothing, merge distance) decide its regions; this sweeps them through the
engine's own code path (``ClassicalEngine.settings`` overridden, ``segment`` as in a run) and
scores every setting on the scenes with true objects, as ``label_quality/run.py`` does: buildings
at IoU >= 0.5 (footprints >= 30 px), NEON tree crowns by box IoU >= 0.4. Each row also holds the
mean best IoU over the true objects (a smoother figure than a recall over 3-61 objects) and the
objects a perfect merge of the engine's regions would find (``merge_ceiling``: a miss there is
the first cut's, a miss only in ``found`` is the merge's).

The summary says which settings meet issue 13's object targets on every scene at once and how
stable a setting is: the same figures over its neighbours in the grid (one step along one axis).
Scenes are single tiles (<= 512 px), so a setting costs 0.1-1 s per scene.

    .venv/bin/python benchmarks/label_quality/engine_sweep.py [--sigma 0.3,1.5] [--scale 50,100]
        [--min-size 64,128] [--merge 10,15] [--ground-sigma-m 0.15] [--scenes neon_osbs,neon_sjer]
        [--json PATH] [--table PATH]

``--ground-sigma-m M`` adds settings whose smoothing is M metres of ground (M / pixel size, at
least the engine's default sigma), with every scale / min size / merge of the grid. Rows go to
``engine_sweep.results.jsonl`` (appended); ``--table PATH`` only summarises a jsonl.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: Issue 13's object-recall targets.
TARGETS = {"aerial_030m_1": 0.75, "aerial_015m_2": 0.75, "spacenet4_atlanta": 0.60,
           "neon_osbs": 0.75, "neon_sjer": 0.75}


def _run_module():
    """label_quality/run.py, for its scene list and truth readers (one definition of each)."""
    spec = importlib.util.spec_from_file_location("label_quality_run", HERE / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tile(scene: dict):
    """The scene as the engine sees it in a run (read and prepared by the run's own functions):
    (EngineTile, transform). Object scenes are one tile."""
    from rasterio.windows import Window

    from geoalps.inputs.bands import resolve_bands
    from geoalps.inputs.scene import open_scene, read_window, valid_in_window
    from geoalps.labelling.tile_work import engine_tile, pixel_size_m

    opened = open_scene(str(scene["image"]))
    window = Window(0, 0, opened.width, opened.height)
    data = read_window(opened, window)
    valid = valid_in_window(opened, window, data)
    bands = resolve_bands(None, opened.count, opened.path, opened.band_roles)
    return engine_tile(opened, data, valid, bands, True, pixel_size_m(opened)), opened.transform


def true_objects(lq, scene: dict):
    """(geometries, box matching, IoU threshold) of the scene's counted true objects, by
    ``run.py``'s rules."""
    if "buildings" in scene:
        geoms, sizes = lq._building_objects(scene)
        return geoms[np.asarray(sizes) >= lq.BUILDING_MIN_PX], False, lq.BUILDING_IOU
    return lq._tree_boxes(scene), True, lq.TREE_BOX_IOU


def merge_ceiling(regions: np.ndarray, true_ids: np.ndarray, n_true: int, box: bool, threshold: float) -> int:
    """True objects a perfect merge of these regions would find: each region given to the object
    holding more than half of it, the object's regions joined, then the usual IoU test (boxes:
    the joined regions' bounding box). Tells a miss of the first cut from a miss of the merge."""
    from geoalps.evaluation.pseudo_labels import _box_iou

    counts = np.bincount(regions.ravel())
    found = 0
    for k in range(1, n_true + 1):
        obj = true_ids == k
        inside = np.bincount(regions[obj], minlength=len(counts))
        take = inside > 0.5 * counts
        take[0] = False
        joined = take[regions]
        if not joined.any():
            continue
        if box:
            rows, cols = np.flatnonzero(joined.any(1)), np.flatnonzero(joined.any(0))
            trows, tcols = np.flatnonzero(obj.any(1)), np.flatnonzero(obj.any(0))
            joined_box = [[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]]
            true_box = [[tcols[0], trows[0], tcols[-1] + 1, trows[-1] + 1]]
            iou = _box_iou(np.asarray(true_box, float), np.asarray(joined_box, float))[0]
        else:
            iou = (joined & obj).sum() / (joined | obj).sum()
        found += bool(iou >= threshold)
    return found


def true_id_raster(truth, shape, transform) -> np.ndarray:
    """The true objects burnt onto the tile grid, object i as i + 1 (0: none)."""
    from rasterio import features

    true, _, _ = truth
    return features.rasterize([(geom, i + 1) for i, geom in enumerate(true)], out_shape=shape,
                              transform=transform, dtype="int32")


def swept_engine(settings):
    """A ClassicalEngine whose settings are ``settings`` (None: the engine's own)."""
    from geoalps.engines.classical import ClassicalEngine
    from geoalps.options import LabelOptions

    class Swept(ClassicalEngine):
        def settings(self, pixel_size_m):
            return settings if settings is not None else super().settings(pixel_size_m)

    return Swept(LabelOptions(engine="classical").validated())


def score(engine, tile, transform, truth, true_ids: np.ndarray) -> dict:
    from geoalps.evaluation import raster_objects
    from geoalps.evaluation.pseudo_labels import best_iou

    started = time.perf_counter()
    masks = engine.segment(tile)
    seconds = time.perf_counter() - started
    min_px = engine.settings(tile.pixel_size_m).min_size_px
    regions = masks.index_image()
    geoms, _, _ = raster_objects(regions, transform, by="value", min_size_px=min_px)
    true, box, threshold = truth
    best = best_iou(geoms, true, box=box)
    return {"found": int((best >= threshold).sum()), "n": int(best.size),
            "merge_ceiling": merge_ceiling(regions, true_ids, len(true), box, threshold),
            "recall": float((best >= threshold).mean()) if best.size else None,
            "mean_best_iou": float(best.mean()) if best.size else None,
            "regions": len(geoms), "seconds": seconds}


def grid_settings(args, pixel_size_m: float | None, default) -> list[tuple[str, object]]:
    from geoalps.engines.classical import RegionSettings, split_size_px

    sigmas = [("px", s) for s in args.sigma]
    if args.ground_sigma_m and pixel_size_m:
        sigmas += [("m", max(default.sigma_px, args.ground_sigma_m / pixel_size_m))]
    out = [("default", None)]
    for (kind, sigma), scale, min_size, merge in itertools.product(sigmas, args.scale, args.min_size, args.merge):
        name = (f"sigma {'%gm' % args.ground_sigma_m if kind == 'm' else '%g' % sigma} scale {scale:g} "
                f"min {min_size} merge {merge:g}")
        split_min_px = split_size_px(min_size, bool(default.split_min_px))  # the engine's own rule
        out.append((name, RegionSettings(scale, min_size, sigma, merge, split_min_px)))
    return out


def summary(rows: list[dict]) -> str:
    """Markdown: the default, the settings meeting every target, and the stablest settings."""
    scenes = sorted({r["scene"] for r in rows})
    table = {}
    for r in rows:
        table.setdefault(r["setting"], {})[r["scene"]] = r
    default = table.get("default", {})

    def met(cells) -> int:
        return sum(1 for s in scenes if s in TARGETS and s in cells and cells[s]["recall"] >= TARGETS[s])

    def worse(cells) -> int:
        return sum(1 for s in scenes if s in default and s in cells and cells[s]["found"] < default[s]["found"])

    def neighbours(name: str) -> list[dict]:
        """Settings one grid step away along scale, min size or merge (same smoothing)."""
        if name == "default":
            return []
        words = name.split()
        axes = {key: sorted({float(n.split()[i + 1]) for n in table if n != "default"})
                for i, key in ((2, "scale"), (4, "min"), (6, "merge"))}
        out = []
        for i, key in ((2, "scale"), (4, "min"), (6, "merge")):
            values = axes[key]
            at = values.index(float(words[i + 1]))
            for step in (at - 1, at + 1):
                if 0 <= step < len(values):
                    other = list(words)
                    other[i + 1] = f"{values[step]:g}"
                    if " ".join(other) in table:
                        out.append(table[" ".join(other)])
        return out

    head = ("| setting | " + " | ".join(scenes) + " | targets met | scenes worse than default | "
            "targets met by its grid neighbours |")
    lines = [head, "|" + "---|" * (len(scenes) + 4)]
    ranked = sorted(table.items(), key=lambda kv: (kv[0] != "default", -met(kv[1]), worse(kv[1]),
                                                   -np.mean([c["mean_best_iou"] for c in kv[1].values()])))
    n_targets = len([s for s in scenes if s in TARGETS])
    for name, cells in ranked[:25]:
        row = " | ".join(f"{cells[s]['found']}/{cells[s]['n']}" if s in cells else "-" for s in scenes)
        around = ", ".join(str(met(n)) for n in neighbours(name)) or "-"
        lines.append(f"| {name} | {row} | {met(cells)} of {n_targets} | {worse(cells)} | {around} |")
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigma", type=_floats, default=[0.3])
    parser.add_argument("--scale", type=_floats, default=[100.0])
    parser.add_argument("--min-size", type=lambda t: [int(v) for v in t.split(",")], default=[128])
    parser.add_argument("--merge", type=_floats, default=[10.0])
    parser.add_argument("--ground-sigma-m", type=float, default=None)
    parser.add_argument("--scenes", default=None)
    parser.add_argument("--tag", default="sweep")
    parser.add_argument("--json", default=str(HERE / "engine_sweep.results.jsonl"))
    parser.add_argument("--table", metavar="JSONL", help="only summarise this jsonl (rows of --tag)")
    args = parser.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            print(summary([r for r in map(json.loads, f) if r["tag"] == args.tag]))
        return 0
    lq = _run_module()
    scenes = [s for s in lq._scenes() if "buildings" in s or "trees" in s]
    if args.scenes:
        scenes = [s for s in scenes if s["name"] in set(args.scenes.split(","))]
    rows = []
    for scene in scenes:
        tile, transform = load_tile(scene)
        truth = true_objects(lq, scene)
        true_ids = true_id_raster(truth, tile.valid.shape, transform)
        default = swept_engine(None).settings(tile.pixel_size_m)
        for name, settings in grid_settings(args, tile.pixel_size_m, default):
            row = {"tag": args.tag, "scene": scene["name"], "setting": name,
                   "settings": (settings or default)._asdict(), "pixel_size_m": tile.pixel_size_m}
            row.update(score(swept_engine(settings), tile, transform, truth, true_ids))
            rows.append(row)
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(f"{scene['name']}: {len(rows)} rows so far", file=sys.stderr, flush=True)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
