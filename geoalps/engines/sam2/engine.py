"""The SAM 2 engine: sam2 automatic masks plus the image embedding for ALPS features.

Model loading (configuration from the checkpoint's tensor shapes) and the generators live in
:mod:`geoalps.engines.sam2`; the generic parts (``SamMasks``, filters, NMS) are the sam engine's.
torch and sam2 are imported when the engine is created, never by other engines' runs.
"""
from __future__ import annotations

from geoalps.engines.base import register_engine
from geoalps.engines.sam.engine import SamEngine
from geoalps.engines.sam2.checkpoints import require_sam2_checkpoint
from geoalps.errors import DependencyError
from geoalps.options import LabelOptions


@register_engine("sam2")
class Sam2Engine(SamEngine):
    """SAM 2 / 2.1 automatic mask generation on each tile (any Hiera size).

    Cost: one Hiera encoder pass per tile (hiera_tiny a few seconds per 1024 px tile on 2 CPU
    cores) plus the prompt decoder for points_per_side^2 points.
    """

    family = "sam2"

    def _load_model(self, options: LabelOptions) -> tuple[str, object, str]:
        checkpoint = str(require_sam2_checkpoint(options.checkpoint, options.model_type))
        try:
            from geoalps.engines.sam2.models import load_sam2
        except ImportError as exc:
            raise DependencyError(
                f"the sam2 engine needs torch and sam2 ({exc.name} is missing): "
                "SAM2_BUILD_CUDA=0 PIP_CONSTRAINT=constraints.txt pip install 'geoalps[sam2]'"
            ) from None
        model, model_name = load_sam2(checkpoint, options.model_type, options.device)
        return checkpoint, model, model_name

    def _generators(self):
        from geoalps.engines.sam2.generators import Sam2FastMaskGenerator, reference_generate

        return Sam2FastMaskGenerator, reference_generate

    def _auto_tile_batch(self) -> int:
        return auto_tile_batch(self.model, self.model_name)


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
