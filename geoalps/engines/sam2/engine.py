"""The SAM 2 engine: sam2 automatic masks plus the image embedding for ALPS features.

Model loading (configuration from the checkpoint's tensor shapes) and the generators live in
:mod:`geoalps.engines.sam2`; the generic parts (``SamMasks``, filters, NMS) are the sam engine's.
torch and sam2 are imported when the engine is created, never by other engines' runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from geoalps.engines.base import MaskEngine, register_engine
from geoalps.engines.sam.engine import SamEngine
from geoalps.engines.sam2.checkpoints import require_sam2_checkpoint
from geoalps.errors import DependencyError
from geoalps.objects.masks import TileMasks
from geoalps.options import LabelOptions


@register_engine("sam2")
class Sam2Engine(SamEngine):
    """SAM 2 / 2.1 automatic mask generation on each tile (any Hiera size).

    Cost: one Hiera encoder pass per tile (hiera_tiny a few seconds per 1024 px tile on 2 CPU
    cores) plus the prompt decoder for points_per_side^2 points.
    """

    provides_embedding = True

    def __init__(self, options: LabelOptions, tile_batch: int = 0) -> None:
        MaskEngine.__init__(self, options, tile_batch)
        checkpoint = str(require_sam2_checkpoint(options.checkpoint, options.model_type))
        try:
            from geoalps.engines.sam2.models import load_sam2
        except ImportError as exc:
            raise DependencyError(
                f"the sam2 engine needs torch and sam2 ({exc.name} is missing): "
                "SAM2_BUILD_CUDA=0 PIP_CONSTRAINT=constraints.txt pip install 'geoalps[sam2]'"
            ) from None
        self.checkpoint = checkpoint
        self.model, self.model_name = load_sam2(checkpoint, options.model_type, options.device)
        settings = dict(
            points_per_side=options.points_per_side,
            points_per_batch=options.points_per_batch,
            pred_iou_thresh=options.pred_iou_thresh,
            stability_score_thresh=options.stability_thresh,
            crop_n_layers=options.crop_layers,
            box_nms_thresh=options.box_nms_iou,
        )
        self._generator = None
        self._batch = 1
        if options.sam_generator == "reference":
            from geoalps.engines.sam2.generators import reference_generate

            self._generate = lambda image, valid: reference_generate(self.model, image, **settings)
        else:
            from geoalps.engines.sam2.generators import Sam2FastMaskGenerator

            self._batch = tile_batch or auto_tile_batch(self.model, self.model_name)
            self._generator = Sam2FastMaskGenerator(self.model, encoder_batch_size=self._batch, **settings)
            self._generate = self._generator.generate

    def describe(self) -> str:
        return f"sam2 ({self.model_name}, {Path(self.checkpoint).name}, {self.options.sam_generator} generator)"

    def generate(self, rgb: np.ndarray, valid: np.ndarray) -> TileMasks:
        return self._generate(rgb, valid).to_tile_masks()


#: Rough GPU memory one 1024 px image takes through each Hiera encoder (bf16 autocast), GiB.
_ENCODER_GIB_PER_IMAGE = {"hiera_tiny": 0.8, "hiera_small": 1.0, "hiera_base_plus": 1.5, "hiera_large": 3.0}


def auto_tile_batch(model, model_name: str) -> int:
    """Tiles per encoder batch for ``--tile-batch 0``: 1 on CPU; on CUDA as many as half the
    free memory holds, at most 8."""
    device = getattr(model, "device", None)
    if device is None or device.type != "cuda":
        return 1
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    size = model_name.split("_", 1)[-1]
    per_image = _ENCODER_GIB_PER_IMAGE.get(size, 3.0)
    return int(max(1, min(8, (free / 2**30) * 0.5 // per_image)))
