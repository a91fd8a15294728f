"""From decoder logits to masks and boxes, with segment_anything's results at lower cost.

- ``upsample_logits``: ``Sam.postprocess_masks`` bit for bit, skipping its identity resizes;
- ``boxes_from_logits``: ``batched_mask_to_box(logits > threshold)`` from row and column
  maxima, without thresholding every pixel; ``boxes_from_hits`` is the shared last step;
- ``remove_small_regions``: segment_anything's ``postprocess_small_regions`` (OpenCV) on
  scipy, for ``min_mask_region_area`` > 0 (``geoalps label`` never asks for it).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batched_mask_to_box
from torchvision.ops.boxes import batched_nms

from geoalps.engines.sam.sam_masks import SamMasks


def upsample_logits(model: Sam, low: torch.Tensor, input_size, orig_size) -> torch.Tensor:
    """``Sam.postprocess_masks`` for (K, h, w) logits, without its identity steps.

    Same values bit for bit: a bilinear resize to the same size returns its input (weights 1
    and 0), so for a 1024 px image the second resize and the crop are skipped; they cost as much
    as the first resize.
    """
    size = model.image_encoder.img_size
    x = F.interpolate(low[:, None], (size, size), mode="bilinear", align_corners=False)
    if tuple(input_size) != (size, size):
        x = x[..., : input_size[0], : input_size[1]]
    if tuple(orig_size) != tuple(x.shape[-2:]):
        x = F.interpolate(x, tuple(orig_size), mode="bilinear", align_corners=False)
    return x[:, 0]


def boxes_from_logits(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """``batched_mask_to_box(logits > threshold)`` from row and column maxima of the logits.

    Same boxes (XYXY, inclusive, [0, 0, 0, 0] when empty) for a quarter of the memory passes:
    a row holds a mask pixel exactly when its largest logit exceeds the threshold.
    """
    return boxes_from_hits(logits.amax(dim=-1) > threshold, logits.amax(dim=-2) > threshold)


def boxes_from_hits(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (inclusive, [0, 0, 0, 0] when empty) from (K, H) / (K, W) occupied rows/cols."""
    h, w = rows.shape[1], cols.shape[1]
    ys = torch.arange(h, device=rows.device)
    xs = torch.arange(w, device=cols.device)
    top = torch.where(rows, ys, h).amin(dim=-1)
    bottom = torch.where(rows, ys, -1).amax(dim=-1)
    left = torch.where(cols, xs, w).amin(dim=-1)
    right = torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return boxes * rows.any(dim=-1, keepdim=True)


def remove_small_regions(result: SamMasks, min_area: int, nms_thresh: float) -> SamMasks:
    """segment_anything's ``postprocess_small_regions`` (holes, then islands, then NMS), on scipy.

    Masks that changed rank below unchanged ones in the NMS, as in segment_anything. Cost: two
    connected-component labellings of an image-sized array per mask, one mask at a time (the
    whole image, as segment_anything does: a hole's size depends on what lies outside the box).
    """
    if len(result) == 0:
        return result
    crops, boxes = [], []
    unchanged = np.zeros(len(result), np.float32)
    for i in range(len(result)):
        mask, changed_holes = _drop_small_components(result.dense(i), min_area, fill_holes=True)
        mask, changed_islands = _drop_small_components(mask, min_area, fill_holes=False)
        unchanged[i] = float(not (changed_holes or changed_islands))
        box = batched_mask_to_box(torch.from_numpy(mask[None]))[0]
        x0, y0, x1, y1 = box.tolist()
        crops.append(mask[y0 : y1 + 1, x0 : x1 + 1].copy())
        boxes.append(box)
    boxes = torch.stack(boxes)
    keep = batched_nms(
        boxes.float(), torch.from_numpy(unchanged), torch.zeros(len(boxes)), iou_threshold=nms_thresh
    ).numpy()
    out = result.filter(keep)
    out.crops = [crops[i] for i in keep]
    out.boxes = boxes.numpy()[keep].astype(np.int64)
    return out


def _drop_small_components(mask: np.ndarray, min_area: int, fill_holes: bool) -> tuple[np.ndarray, bool]:
    """Fill holes (or drop islands) under ``min_area`` pixels, 8-connected as OpenCV's call;
    an all-small mask keeps its largest island. Returns the mask and whether it changed."""
    from scipy import ndimage

    working = ~mask if fill_holes else mask
    labels, n = ndimage.label(working, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask, False
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < min_area]
    if not small:
        return mask, False
    fill = [0] + small
    if not fill_holes:
        fill = [i for i in range(n + 1) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True
