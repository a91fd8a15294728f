"""``Sam2PromptDecoder``: SAM 2's prompt encoder and mask decoder on batches of one-point prompts.

What ``SAM2ImagePredictor._predict`` computes with multimask output, many prompts against one
image's features, through the sam engine's :class:`~geoalps.engines.sam.decoder.PointPromptDecoder`
(SAM 2's mask decoder has SAM's two-way transformer, attention modules and heads): layer 0's image
projections once per image, no (prompts x pixels x channels) projections in later layers, point
tokens dropped in the final attention, the upscaling as two matrix products on the token layout.
SAM 2's additions go through that class's hooks: the object-score token ahead of the IoU token
(``pred_obj_scores``; its score is not used), the high-resolution skip features (already through
``conv_s0``/``conv_s1``) added inside the upscaling in the token layout's pixel order; the IoU
head is sam2's module (sigmoid included where the model has it). Same weights, same results up to
float rounding (~1e-6 on the logits, tests/engines/sam2/test_decoder.py).

Only prompts with a mask whose predicted IoU passes are upscaled; they come back with their
256 x 256 logits, unclamped (sam2 upsamples the unclamped logits, and clamps only what it hands
back). Cost per prompt: that of the sam engine's decoder at the same width (256-d: about 1.3
GMAC) plus the skip additions (~10% of the upscaling); sam2 runs the whole transformer on 4096
repeated image tokens per prompt. Measured on CPU (benchmarks/sam2_amg): decoder time 2.2x lower,
hiera_tiny generator 2.5x faster than sam2's at 32x32 points and default thresholds.
"""
from __future__ import annotations

import torch
from sam2.modeling.sam2_base import SAM2Base

from geoalps.engines.sam.decoder import PointPromptDecoder


class Sam2PromptDecoder(PointPromptDecoder):
    """``set_embedding(features)`` once per image (or crop), then ``decode(points, min_iou)``
    per batch (see :meth:`PointPromptDecoder.decode`)."""

    def _parts(self, model: SAM2Base):
        decoder = model.sam_mask_decoder
        prefix = [decoder.obj_score_token.weight] if decoder.pred_obj_scores else []
        return model.sam_prompt_encoder, decoder, prefix

    def set_embedding(self, features: dict) -> None:
        """``features``: one image's ``image_embed`` (1, C, 64, 64) and ``high_res_feats``
        (``Sam2BatchEncoder`` output, as ``SAM2ImagePredictor._features``)."""
        skip = features["high_res_feats"] if self.decoder.use_high_res_features else None
        super().set_embedding(features["image_embed"], skip)
