"""segment_anything's own automatic mask generator, returning geoalps's ``SamMasks``.

``--sam-generator reference`` runs it, and the tests and benchmarks/sam_amg check
``FastMaskGenerator`` against it. It is segment_anything's code unchanged: one encoder pass
per crop, every prompt's masks upsampled to full resolution and run-length encoded, so it is
several times slower than the fast generator and its masks arrive as (H, W) arrays, which are
cropped to their boxes once here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam

from geoalps.engines.sam.postprocess import remove_small_regions
from geoalps.engines.sam.sam_masks import SamMasks, check_image


def reference_generate(model: Sam, image: np.ndarray, **settings: Any) -> SamMasks:
    """segment_anything's ``SamAutomaticMaskGenerator`` (binary masks) as a ``SamMasks``.

    ``settings`` are the generator's keyword arguments (points_per_side, points_per_batch,
    pred_iou_thresh, ...). The full-image embedding is kept from the generator's own first
    encoder pass (the full image is always its first crop), so no extra encoder run is needed.
    ``min_mask_region_area`` runs segment_anything's OpenCV post-processing when OpenCV is
    installed, else the scipy port ``remove_small_regions``. Cost: segment_anything's, see
    ../shared/INSTALL.md (about 57 s for 16x16 points on 512 px with vit_b on 2 CPU cores).
    """
    check_image(image, None)
    min_area = settings.pop("min_mask_region_area", 0)
    has_cv2 = _has_opencv()
    generator = SamAutomaticMaskGenerator(
        model,
        output_mode="binary_mask",
        min_mask_region_area=min_area if has_cv2 else 0,
        **settings,
    )
    anns, (features, input_size) = _generate_keeping_embedding(generator, image)
    embedding = features[0].float().cpu().numpy()
    input_size = tuple(int(v) for v in input_size)
    if not anns:
        return SamMasks.empty(image.shape[:2], embedding, input_size)
    result = annotations_to_sam_masks(anns, image.shape[:2], embedding, input_size)
    if min_area > 0 and not has_cv2:
        nms = max(generator.box_nms_thresh, generator.crop_nms_thresh)
        result = remove_small_regions(result, min_area, nms)
    return result


def _has_opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _generate_keeping_embedding(generator: SamAutomaticMaskGenerator, image: np.ndarray):
    """The generator's annotations, and the (1, C, 64, 64) features and input size of its first
    encoder pass (the full image), caught before the predictor resets them."""
    predictor = generator.predictor
    captured: list[tuple[torch.Tensor, tuple[int, int]]] = []
    reset = predictor.reset_image

    def keep_first_embedding() -> None:
        if predictor.is_image_set and not captured:
            captured.append((predictor.features.detach().clone(), tuple(predictor.input_size)))
        reset()

    predictor.reset_image = keep_first_embedding
    try:
        anns = generator.generate(image)
    finally:
        predictor.reset_image = reset
    if captured:
        return anns, captured[0]
    with torch.inference_mode():  # a segment_anything that no longer resets after each crop
        predictor.set_image(image)
        return anns, (predictor.features, tuple(predictor.input_size))


def annotations_to_sam_masks(anns: list[dict], image_hw, embedding: np.ndarray, input_size) -> SamMasks:
    """segment_anything's (or sam2's) annotation dicts as one ``SamMasks``, each (H, W) mask cropped to its
    box (segment_anything's boxes are the masks' tight boxes)."""

    def xyxy(xywh) -> list[int]:
        x, y, bw, bh = (int(round(v)) for v in xywh)
        return [x, y, x + bw, y + bh]

    boxes = np.array([xyxy(a["bbox"]) for a in anns], np.int64)
    crops = [
        np.asarray(a["segmentation"], dtype=bool)[y0 : y1 + 1, x0 : x1 + 1].copy()
        for a, (x0, y0, x1, y1) in zip(anns, boxes.tolist())
    ]
    return SamMasks(
        crops=crops,
        scores=np.array([a["predicted_iou"] for a in anns], np.float32),
        stability=np.array([a["stability_score"] for a in anns], np.float32),
        boxes=boxes,
        points=np.array([a["point_coords"][0] for a in anns], np.float32),
        crop_boxes=np.array([xyxy(a["crop_box"]) for a in anns], np.int64),
        image_hw=tuple(int(v) for v in image_hw),
        embedding=embedding,
        input_size=input_size,
    )
