"""The SAM engine: segment_anything automatic masks plus the image-encoder embedding for ALPS features.

Model loading, size inference from checkpoint tensor shapes and the mask generators live in
:mod:`geoalps.engines.sam`; this adapter only turns their output into ``TileMasks``. torch is imported
when the engine is created, never by ``--engine classical`` runs.
"""
from __future__ import annotations

from pathlib import Path


from geoalps.engines.base import EngineTile, MaskEngine, register_engine
from geoalps.engines.sam.checkpoints import require_checkpoint
from geoalps.errors import DependencyError
from geoalps.objects.masks import TileMasks
from geoalps.options import LabelOptions


@register_engine("sam")
class SamEngine(MaskEngine):
    """Segment Anything automatic mask generation on each tile (see :mod:`geoalps.engines.sam.generators`).

    Cost: one image-encoder pass per tile (about 26 s for vit_b at 1024 px on 2 CPU cores, well
    under a second on a GPU) plus the prompt decoder for points_per_side^2 points.
    """

    provides_embedding = True

    #: The engine's name in ``describe()``.
    family = "sam"

    def __init__(self, options: LabelOptions, tile_batch: int = 0) -> None:
        super().__init__(options, tile_batch)
        self.checkpoint, self.model, self.model_name = self._load_model(options)
        settings = dict(
            points_per_side=options.points_per_side,
            points_per_batch=options.points_per_batch,
            pred_iou_thresh=options.pred_iou_thresh,
            stability_score_thresh=options.stability_thresh,
            crop_n_layers=options.crop_layers,
            box_nms_thresh=options.box_nms_iou,
        )
        fast_generator_class, reference_generate = self._generators()
        if options.sam_generator == "reference":  # segment_anything's own generator (prompts everywhere)
            self._batch = 1
            self._masks = lambda rgbs, valids: [reference_generate(self.model, rgb, **settings) for rgb in rgbs]
        else:
            self._batch = tile_batch or self._auto_tile_batch()
            generator = fast_generator_class(self.model, encoder_batch_size=self._batch, **settings)
            self._masks = generator.generate_many

    # The three hooks a model family (sam, sam2) fills in; everything else is shared.
    def _load_model(self, options: LabelOptions) -> tuple[str, object, str]:
        """(checkpoint path, model, model name) for ``options``; one-line errors when missing."""
        checkpoint = str(require_checkpoint(options.checkpoint, options.model_type))
        try:
            from geoalps.engines.sam.models import load_sam
        except ImportError as exc:
            raise DependencyError(
                f"the sam engine needs torch and segment-anything ({exc.name} is missing): "
                "pip install 'geoalps[sam]'"
            ) from None
        model, model_name = load_sam(checkpoint, options.model_type, options.device)
        return checkpoint, model, model_name

    def _generators(self):
        """The family's (fast generator class, reference generate function), imported once."""
        from geoalps.engines.sam.generators import FastMaskGenerator, reference_generate

        return FastMaskGenerator, reference_generate

    def _auto_tile_batch(self) -> int:
        return auto_tile_batch(self.model)

    def describe(self) -> str:
        return f"{self.family} ({self.model_name}, {Path(self.checkpoint).name}, {self.options.sam_generator} generator)"

    @property
    def tiles_per_call(self) -> int:
        return self._batch

    def generate_tiles(self, tiles: list[EngineTile]) -> list[TileMasks]:
        """Masks for one or more tiles (their RGB views); the fast generator batches their
        encoder passes (``--tile-batch``)."""
        return [result.to_tile_masks() for result in self._masks([t.rgb for t in tiles], [t.valid for t in tiles])]


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
