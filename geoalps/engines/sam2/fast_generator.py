"""``Sam2FastMaskGenerator``: sam2's ``SAM2AutomaticMaskGenerator`` masks for much less work.

The sam engine's ``FastMaskGenerator`` with SAM 2's model parts plugged in; everything generic is
shared with it (crop and prompt planning, nodata-aware prompts, predicted-IoU filter, stability
bound on the 256 x 256 logits, exact cells, compact candidates, NMS, ``SamMasks``):

- encoder: ``Sam2BatchEncoder`` (sam2's transform and feature preparation, several tiles per
  encoder call);
- decoder: ``Sam2PromptDecoder`` (the sam engine's ``PointPromptDecoder`` on SAM 2's prompt
  encoder and mask decoder: prompt-independent work once per image, high-res skip features);
- geometry: SAM 2 upsamples the 256 x 256 logits straight to the image size (no square padding),
  so the stability bound uses that single resize, and ``ExactCells`` (bit-identical masks without
  upsampling) applies to square images of the model's input size (1024 px tiles);
- prompts as ``SAM2AutomaticMaskGenerator`` gives them: float32 crop pixels scaled to the model
  frame by sam2's ``transform_coords``.

sam2 upsamples every prompt's three masks to full resolution (3 x 4 MB of float32 per prompt at
1024 px) before filtering, thresholds and run-length encodes them; here only masks that can pass
the filters are looked at in full resolution, and only NMS survivors become masks.
``use_m2m`` and ``min_mask_region_area`` (sam2's hole filling) are not offered.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base

from geoalps.engines.sam.exact_cells import ExactCells
from geoalps.engines.sam.fast_generator import FastMaskGenerator, _decoder_batch
from geoalps.engines.sam.stability_bound import StabilityBound
from geoalps.engines.sam2.batch_encoder import Sam2BatchEncoder
from geoalps.engines.sam2.decoder import Sam2PromptDecoder

LOW_RES = 256  # SAM 2's mask logits are 256 x 256 (4x the 64 x 64 embedding)


class Sam2FastMaskGenerator(FastMaskGenerator):
    """Automatic masks with ``SAM2AutomaticMaskGenerator``'s settings and results, at lower cost.

    Arguments are those of :class:`geoalps.engines.sam.fast_generator.FastMaskGenerator` (and of
    ``SAM2AutomaticMaskGenerator``: points_per_side, points_per_batch, pred_iou_thresh,
    stability_score_thresh, stability_score_offset, box_nms_thresh, crop_n_layers,
    crop_nms_thresh, crop_overlap_ratio, crop_n_points_downscale_factor), plus
    ``mask_threshold`` (sam2's, default 0.0). ``sdpa``/``compile`` are ignored: Hiera already
    runs its attention through ``scaled_dot_product_attention``.
    """

    def __init__(self, model: SAM2Base, *args, mask_threshold: float = 0.0, **kwargs) -> None:
        if kwargs.get("min_mask_region_area", 0):
            raise ValueError("min_mask_region_area is not supported by the SAM 2 fast generator")
        self._threshold = float(mask_threshold)
        super().__init__(model, *args, **kwargs)

    def _model_mask_threshold(self) -> float:
        return self._threshold

    def _make_encoder(self, batch_size: int, sdpa: bool, compile: bool):
        return Sam2BatchEncoder(self.model, batch_size=batch_size, autocast=self.autocast)

    def _make_decoder(self, dtype: torch.dtype):
        return Sam2PromptDecoder(self.model, dtype=dtype)

    def _decoder_batch(self, points_per_batch: int, on_cuda: bool) -> int:
        return _decoder_batch(self.model.sam_prompt_embed_dim, points_per_batch, on_cuda)

    def _model_points(self, points: np.ndarray, crop_hw) -> torch.Tensor:
        xy = torch.as_tensor(points, dtype=torch.float32, device=self.device)
        return self.encoder.transform.transform_coords(xy, normalize=True, orig_hw=tuple(crop_hw))

    def _geometry(self, input_size, crop_hw):
        bound = StabilityBound(crop_hw, crop_hw, tuple(crop_hw), LOW_RES, self.device)
        cells = None
        if tuple(crop_hw) == (4 * LOW_RES, 4 * LOW_RES):
            cells = ExactCells(tuple(crop_hw), LOW_RES, self.device)
        return bound, cells

    def _upsample(self, low: torch.Tensor, crop) -> torch.Tensor:
        """``SAM2Transforms.postprocess_masks`` without hole filling: one bilinear resize."""
        return F.interpolate(low[:, None], tuple(crop.hw), mode="bilinear", align_corners=False)[:, 0]

    def _embedding_array(self, features) -> np.ndarray:
        return features["image_embed"][0].cpu().numpy().astype(np.float32)
