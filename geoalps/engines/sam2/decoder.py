"""``Sam2PromptDecoder``: SAM 2's prompt encoder and mask decoder on batches of one-point prompts.

The same calls as ``SAM2ImagePredictor._predict`` with multimask output (sam2's own modules,
high-resolution skip features included), many prompts against one image's features; only the
prompts with a mask whose predicted IoU passes come back with their 256 x 256 logits, which are
returned unclamped (sam2 upsamples the unclamped logits, and clamps only what it hands back).
Cost per prompt on CPU: the two-way transformer on 4096 tokens plus the upscaling to 256 x 256.
"""
from __future__ import annotations

import torch
from sam2.modeling.sam2_base import SAM2Base


class Sam2PromptDecoder:
    """``set_embedding(features)`` once per image (or crop), then ``decode(points)`` per batch."""

    def __init__(self, model: SAM2Base, multimask_output: bool = True) -> None:
        self.model = model
        self.multimask_output = multimask_output
        self._features = None

    def set_embedding(self, features: dict) -> None:
        self._features = features

    @torch.inference_mode()
    def decode(self, points: torch.Tensor, min_iou: float | None):
        """(P, 2) prompts in the model's 1024 px frame -> predicted IoU (P, M), indexes (P',)
        of prompts with some IoU above ``min_iou`` (all when None) and their logits (P', M, 256, 256)."""
        labels = torch.ones((len(points), 1), dtype=torch.int, device=points.device)
        sparse, dense = self.model.sam_prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
        low, iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=self._features["image_embed"],
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.multimask_output,
            repeat_image=len(points) > 1,
            high_res_features=self._features["high_res_feats"],
        )
        if min_iou is None:
            index = torch.arange(len(points), device=points.device)
        else:
            index = (iou > min_iou).any(dim=1).nonzero()[:, 0]
        return iou, index, low[index]
