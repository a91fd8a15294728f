"""The SAM engine: segment_anything automatic masks plus the image-encoder embedding for ALPS features.

Model loading, size inference from checkpoint tensor shapes and the mask generators live in
:mod:`geoalps.engines.sam`; this adapter only turns their output into ``TileMasks``. torch is imported
when the engine is created, never by ``--engine classical`` runs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geoalps.engines.base import MaskEngine, register_engine
from geoalps.errors import GeoAlpsError
from geoalps.objects.masks import TileMasks
from geoalps.options import LabelOptions


def find_checkpoint(options: LabelOptions) -> str | None:
    """The SAM checkpoint a run would use: ``--checkpoint``, ``GEOALPS_SAM_CHECKPOINT``, or one
    downloaded earlier with ``geoalps models download`` (any size), in that order."""
    explicit = options.checkpoint or os.environ.get("GEOALPS_SAM_CHECKPOINT")
    if explicit:
        return explicit
    try:
        from geoalps.engines.sam.checkpoints import find_cached_checkpoint
    except ImportError:
        return None
    model_type = None if options.model_type == "auto" else options.model_type
    found = find_cached_checkpoint(model_type or "auto")
    return str(found) if found else None


@register_engine("sam")
class SamEngine(MaskEngine):
    """Segment Anything automatic mask generation on each tile (see :mod:`geoalps.engines.sam.amg`).

    Cost: one image-encoder pass per tile (about 26 s for vit_b at 1024 px on 2 CPU cores, well
    under a second on a GPU) plus the prompt decoder for points_per_side^2 points.
    """

    provides_embedding = True

    def __init__(self, options: LabelOptions) -> None:
        super().__init__(options)
        checkpoint = find_checkpoint(options)
        if not checkpoint:
            raise GeoAlpsError(
                "--engine sam needs a SAM checkpoint: pass --checkpoint PATH, set "
                "GEOALPS_SAM_CHECKPOINT, or run `geoalps models download vit_b`"
            )
        if not Path(checkpoint).is_file():
            raise GeoAlpsError(f"{checkpoint}: SAM checkpoint not found")
        try:
            from geoalps.engines.sam.models import load_sam
        except ImportError as exc:
            raise GeoAlpsError(
                f"the sam engine needs torch and segment-anything ({exc.name} is missing): "
                "pip install 'geoalps[sam]'"
            ) from None
        self.checkpoint = checkpoint
        self.model, self.model_name = load_sam(checkpoint, options.model_type, options.device)
        settings = dict(
            points_per_side=options.points_per_side,
            points_per_batch=options.points_per_batch,
            pred_iou_thresh=options.pred_iou_thresh,
            stability_score_thresh=options.stability_thresh,
            crop_n_layers=options.crop_layers,
            box_nms_thresh=options.dedupe_iou,
        )
        self._generator = None
        self._batch = 1
        if options.sam_generator == "reference":
            from geoalps.engines.sam.amg import reference_generate

            self._generate = lambda image, valid: reference_generate(self.model, image, **settings)
        else:
            from geoalps.engines.sam.amg import FastMaskGenerator

            self._batch = options.tile_batch or auto_tile_batch(self.model)
            self._generator = FastMaskGenerator(self.model, encoder_batch_size=self._batch, **settings)
            self._generate = self._generator.generate

    def describe(self) -> str:
        return f"sam ({self.model_name}, {Path(self.checkpoint).name}, {self.options.sam_generator} generator)"

    @property
    def tiles_per_call(self) -> int:
        return self._batch

    def generate(self, rgb: np.ndarray, valid: np.ndarray) -> TileMasks:
        return self._to_tile_masks(self._generate(rgb, valid), rgb.shape[:2])

    def generate_many(self, rgbs: list[np.ndarray], valids: list[np.ndarray]) -> list[TileMasks]:
        """Several tiles with their encoder passes batched (``--tile-batch``)."""
        if self._generator is None or len(rgbs) == 1:
            return super().generate_many(rgbs, valids)
        results = self._generator.generate_many(rgbs, valids)
        return [self._to_tile_masks(r, rgb.shape[:2]) for r, rgb in zip(results, rgbs)]

    def _to_tile_masks(self, result, shape: tuple[int, int]) -> TileMasks:
        masks = np.asarray(result.masks, dtype=bool).reshape(-1, *shape)
        embedding = result.embedding
        if hasattr(embedding, "detach"):
            embedding = embedding.detach().float().cpu().numpy()
        embedding = np.asarray(embedding, dtype=np.float32)
        if embedding.ndim == 4:
            embedding = embedding[0]
        # The encoder sees the tile resized so its long side is the model's input size, padded to a
        # square: only the top-left cells of the embedding grid cover the image.
        grid = embedding.shape[-1]
        in_h, in_w = result.input_size
        long_side = max(in_h, in_w)
        extent = (
            max(1, int(np.ceil(in_h / long_side * grid))) if long_side else grid,
            max(1, int(np.ceil(in_w / long_side * grid))) if long_side else grid,
        )
        return TileMasks.from_dense(
            masks, np.asarray(result.scores), embedding=embedding, embedding_extent=extent
        )


#: Rough GPU memory one 1024 px image takes through each encoder (bf16 autocast, activations
#: included), in GiB; used to pick how many tiles share an encoder batch.
_ENCODER_GIB_PER_IMAGE = {"vit_b": 1.5, "vit_l": 2.5, "vit_h": 3.5}


def auto_tile_batch(model) -> int:
    """Tiles per encoder batch for ``--tile-batch 0``: 1 on CPU (batching buys nothing there and
    multiplies memory), on CUDA as many as half the free memory holds, at most 8."""
    device = getattr(model, "device", None)
    if device is None or device.type != "cuda":
        return 1
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    width = model.image_encoder.patch_embed.proj.out_channels
    per_image = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(width, "vit_h")
    return int(max(1, min(8, (free / 2**30) * 0.5 // _ENCODER_GIB_PER_IMAGE[per_image])))
