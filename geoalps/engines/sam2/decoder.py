"""``Sam2PromptDecoder``: SAM 2's prompt encoder and mask decoder on batches of one-point prompts.

What ``SAM2ImagePredictor._predict`` computes with multimask output (sam2's own modules,
high-resolution skip features included), many prompts against one image's features; only the
prompts with a mask whose predicted IoU passes are upscaled and come back with their 256 x 256
logits, unclamped (sam2 upsamples the unclamped logits, and clamps only what it hands back).
Requires the decoder's high-resolution features (every SAM 2 release uses them).
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
        of prompts with some IoU above ``min_iou`` (all when None) and their logits (P', M, 256, 256).

        ``MaskDecoder.predict_masks`` in two steps: the two-way transformer and the IoU head for
        every prompt, then the upscaling and hypernetworks (a third of the decoder's work) only
        for prompts whose masks can pass the IoU filter. Same modules, same operations per prompt.
        """
        labels = torch.ones((len(points), 1), dtype=torch.int, device=points.device)
        prompt_encoder, decoder = self.model.sam_prompt_encoder, self.model.sam_mask_decoder
        sparse, dense = prompt_encoder(points=(points[:, None, :], labels), boxes=None, masks=None)
        s = 1 if decoder.pred_obj_scores else 0
        heads = [decoder.obj_score_token.weight] if s else []
        output_tokens = torch.cat([*heads, decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), dim=1)
        image = self._features["image_embed"]
        src = torch.repeat_interleave(image, tokens.shape[0], dim=0) if len(points) > 1 else image
        src = src + dense
        pos_src = torch.repeat_interleave(prompt_encoder.get_dense_pe(), tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = decoder.transformer(src, pos_src, tokens)
        first = 1 if self.multimask_output else 0  # multimask: masks 1..3 (sam2's slicing)
        last = decoder.num_mask_tokens if self.multimask_output else 1
        iou = decoder.iou_prediction_head(hs[:, s, :])[:, first:last]
        if min_iou is None:
            index = torch.arange(len(points), device=points.device)
        else:
            index = (iou > min_iou).any(dim=1).nonzero()[:, 0]
        if len(index) == 0:
            return iou, index, iou.new_zeros((0, last - first, 4 * h, 4 * w))
        mask_tokens_out = hs[index, s + 1 : s + 1 + decoder.num_mask_tokens, :]
        src = src[index].transpose(1, 2).reshape(len(index), c, h, w)
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        feat_s0, feat_s1 = self._features["high_res_feats"]
        upscaled = act1(ln1(dc1(src) + feat_s1))
        upscaled = act2(dc2(upscaled) + feat_s0)
        hyper_in = torch.stack(
            [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(decoder.num_mask_tokens)],
            dim=1,
        )
        k, c2, h2, w2 = upscaled.shape
        masks = (hyper_in @ upscaled.view(k, c2, h2 * w2)).view(k, -1, h2, w2)
        return iou, index, masks[:, first:last]
