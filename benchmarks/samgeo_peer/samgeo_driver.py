"""Run segment-geospatial's ``SamGeo.generate(..., batch=True)`` the way its docs do, then vectorize.

Runs in the separate samgeo venv (``/tmp/samgeo-venv/bin/python samgeo_driver.py ...``), never in
geoalps's. ``bench.py`` starts it as a subprocess and measures its wall time and peak memory; this
script only adds stage timings and counts, printed as one JSON line on stdout and written to
OUT_DIR/samgeo_stats.json:

- ``load_s``: ``SamGeo(model_type="vit_b", checkpoint=PATH, ...)`` (an existing checkpoint path is
  used as is: samgeo only downloads when the path does not exist, so the path is checked first);
- ``generate_s``: ``generate(scene, mask.tif, batch=True, ...)``: samgeo's tiling, one
  ``SamAutomaticMaskGenerator.generate`` per window, the union of masks written to a GeoTIFF;
- ``vectorize_s``: ``tiff_to_gpkg(mask.tif, out.gpkg)``, samgeo's own raster-to-polygon step, so
  both tools end with a GeoPackage of polygons;
- ``masks``: masks SAM returned, summed over windows (counted by wrapping the generator's
  ``generate``, no extra work); ``windows``: how many windows went through SAM.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scene")
    parser.add_argument("checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-thresh", type=float, default=0.95)
    parser.add_argument("--box-nms-thresh", type=float, default=0.7)
    parser.add_argument("--sample-size", type=int, default=512, help="batch_sample_size (square)")
    args = parser.parse_args()

    if not os.path.isfile(args.checkpoint):  # samgeo would start a download otherwise
        sys.exit(f"{args.checkpoint}: checkpoint not found")
    os.makedirs(args.out_dir, exist_ok=True)
    mask_tif = os.path.join(args.out_dir, "samgeo_mask.tif")
    out_gpkg = os.path.join(args.out_dir, "samgeo.gpkg")
    for path in (mask_tif, out_gpkg):
        if os.path.exists(path):
            os.remove(path)

    t0 = time.perf_counter()
    from samgeo import SamGeo  # import time counts as load time: users pay it too

    sam = SamGeo(
        model_type="vit_b",
        checkpoint=args.checkpoint,
        device="cpu",
        sam_kwargs={
            "points_per_side": args.points_per_side,
            "points_per_batch": args.points_per_batch,
            "pred_iou_thresh": args.pred_iou_thresh,
            "stability_score_thresh": args.stability_thresh,
            "box_nms_thresh": args.box_nms_thresh,
        },
    )
    assert sam.checkpoint == args.checkpoint, sam.checkpoint  # no download happened
    counts = []
    inner = sam.mask_generator.generate

    def counting_generate(image, *a, **k):
        masks = inner(image, *a, **k)
        counts.append(len(masks))
        return masks

    sam.mask_generator.generate = counting_generate
    t1 = time.perf_counter()
    sam.generate(
        args.scene, mask_tif, batch=True, batch_sample_size=(args.sample_size, args.sample_size)
    )
    t2 = time.perf_counter()
    sam.tiff_to_gpkg(mask_tif, out_gpkg)
    t3 = time.perf_counter()
    stats = {
        "load_s": round(t1 - t0, 2),
        "generate_s": round(t2 - t1, 2),
        "vectorize_s": round(t3 - t2, 2),
        "windows": len(counts),
        "masks": sum(counts),
        "masks_per_window": counts,
        "mask_tif": mask_tif,
        "gpkg": out_gpkg,
    }
    # bench.py's run_measured keeps only stderr, so the figures go to a file as well.
    with open(os.path.join(args.out_dir, "samgeo_stats.json"), "w") as f:
        json.dump(stats, f)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
