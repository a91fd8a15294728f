"""sam2's own ``SAM2AutomaticMaskGenerator``, returning geoalps's ``SamMasks``.

``--sam-generator reference`` with ``--engine sam2`` runs it, and tests/engines/sam2 and
benchmarks/sam2_amg check ``Sam2FastMaskGenerator`` against it. It is sam2's code unchanged:
one encoder pass per crop, every prompt's three masks upsampled to full resolution, thresholded
and run-length encoded; the annotations become a ``SamMasks`` exactly as for the sam engine.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.modeling.sam2_base import SAM2Base

from geoalps.engines.sam.reference_generator import annotations_to_sam_masks
from geoalps.engines.sam.sam_masks import SamMasks, check_image


def reference_generate(model: SAM2Base, image: np.ndarray, **settings: Any) -> SamMasks:
    """``SAM2AutomaticMaskGenerator(model, **settings)`` on one (H, W, 3) uint8 image.

    The full-image embedding (``image_embed``, (C, 64, 64)) is kept from the generator's own
    first encoder pass, so no extra encoder run is needed. SAM 2 resizes every image to the
    model's square input, so the whole embedding grid covers the image (``input_size`` is
    (1024, 1024)). Cost: sam2's.
    """
    check_image(image, None)
    generator = SAM2AutomaticMaskGenerator(model, output_mode="binary_mask", **settings)
    anns, embedding = _generate_keeping_embedding(generator, image)
    size = int(model.image_size)
    embedding = embedding[0].float().cpu().numpy()
    if not anns:
        return SamMasks.empty(image.shape[:2], embedding, (size, size))
    return annotations_to_sam_masks(anns, image.shape[:2], embedding, (size, size))


def _generate_keeping_embedding(generator: SAM2AutomaticMaskGenerator, image: np.ndarray):
    """The generator's annotations and the (1, C, 64, 64) embedding of its first encoder pass
    (the full image), caught before the predictor resets it."""
    predictor = generator.predictor
    captured: list[torch.Tensor] = []
    reset = predictor.reset_predictor

    def keep_first_embedding() -> None:
        if predictor._is_image_set and not captured:
            captured.append(predictor._features["image_embed"].detach().clone())
        reset()

    predictor.reset_predictor = keep_first_embedding
    try:
        anns = generator.generate(image)
    finally:
        predictor.reset_predictor = reset
    if captured:
        return anns, captured[0]
    with torch.inference_mode():  # a sam2 that no longer resets after each crop
        predictor.set_image(image)
        return anns, predictor.get_image_embedding()
