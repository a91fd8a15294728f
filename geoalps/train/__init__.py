"""Second half of ALPS: pre-train a segmentation net on pseudo-labels, fine-tune, predict, evaluate.

The path of the data, one module each:

    data.py        scenes + label rasters/vectors -> pixel tiles (one tiler), regions (train/val/few-label)
    models.py      timm Swin backbone (any band count) + UPerNet-style decoder, named sizes
    mim.py         SimMIM: patch masks, reconstruction head, loss on masked pixels only
    loop.py        pretrain() and finetune(): the training loop (device, AMP, resume, logs)
    checkpoint.py  what a .pt file carries (architecture, bands, normalisation, classes, tile)
    predict.py     the tile plan over a scene -> blended class raster on the scene grid (+ polygons)
    metrics.py     confusion matrix, mIoU, per-class IoU, overall accuracy; evaluate() on rasters

Shared with labelling: scenes are :class:`geoalps.inputs.scene.Scene` records, progress goes
through :class:`geoalps.progress.Progress`, devices through :mod:`geoalps.devices`, outputs through
:mod:`geoalps.files` and the one label-raster / GeoPackage writers in :mod:`geoalps.outputs`.

Importing this package is cheap; torch and timm load when a function needs them.
"""
from __future__ import annotations

__all__ = ["evaluate", "finetune", "predict", "pretrain"]


def __getattr__(name: str):
    # Lazy re-exports so ``import geoalps.train`` does not pull in torch.
    if name in ("pretrain", "finetune"):
        from geoalps.train import loop

        return getattr(loop, name)
    if name == "predict":
        from geoalps.train.predict import predict

        return predict
    if name == "evaluate":
        from geoalps.train.metrics import evaluate

        return evaluate
    raise AttributeError(name)
