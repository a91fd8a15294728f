"""``SamMasks``: one image's automatic masks, as both mask generators return them.

The record keeps segment_anything's conventions (XYXY boxes with inclusive max, empty masks
kept with box [0, 0, 0, 0]) and its per-mask fields (predicted IoU, stability, prompt point,
crop box), so the fast generator can be checked against segment_anything's field by field.
Masks are crops to their boxes, never (N, H, W) arrays: memory follows the objects' area.
``to_tile_masks`` hands them to the rest of geoalps as ``TileMasks`` without changing form.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geoalps.objects.masks import TileMasks


@dataclass
class SamMasks:
    """The masks of one image and what produced them; every per-mask field has N rows.

    ``crops[i]`` is mask i inside its box: ``dense(i)[y0 : y1 + 1, x0 : x1 + 1]`` for
    ``boxes[i] = (x0, y0, x1, y1)``, XYXY in image pixels with inclusive max (segment_anything's
    convention; an empty mask has box [0, 0, 0, 0] and a 1 x 1 all-False crop). ``embedding`` is
    the full image's encoder output (C, 64, 64) and ``input_size`` the (h, w) of the resized image
    inside the model's 1024 px input, i.e. the embedding cells that hold image (``ceil(h / 16)``
    rows, ``ceil(w / 16)`` columns).
    """

    crops: list[np.ndarray]  # N (box h, box w) bool
    scores: np.ndarray  # (N,) float32, predicted IoU
    stability: np.ndarray  # (N,) float32
    boxes: np.ndarray  # (N, 4) int64
    points: np.ndarray  # (N, 2) float32, the prompt (x, y) in image pixels
    crop_boxes: np.ndarray  # (N, 4) int64, XYXY of the crop the mask came from
    image_hw: tuple[int, int]
    embedding: np.ndarray | None  # (C, 64, 64) float32
    input_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @classmethod
    def empty(cls, image_hw: tuple[int, int], embedding, input_size) -> "SamMasks":
        """No masks, but the image's size and embedding."""
        return cls(
            crops=[],
            scores=np.zeros(0, np.float32),
            stability=np.zeros(0, np.float32),
            boxes=np.zeros((0, 4), np.int64),
            points=np.zeros((0, 2), np.float32),
            crop_boxes=np.zeros((0, 4), np.int64),
            image_hw=image_hw,
            embedding=embedding,
            input_size=input_size,
        )

    def __len__(self) -> int:
        return len(self.scores)

    def filter(self, keep: np.ndarray) -> "SamMasks":
        """A copy with the masks selected by ``keep`` (bool mask or indexes), all fields at once."""
        keep = np.asarray(keep)
        index = np.flatnonzero(keep) if keep.dtype == bool else keep.reshape(-1)
        return SamMasks(
            crops=[self.crops[i] for i in index],
            scores=self.scores[keep],
            stability=self.stability[keep],
            boxes=self.boxes[keep],
            points=self.points[keep],
            crop_boxes=self.crop_boxes[keep],
            image_hw=self.image_hw,
            embedding=self.embedding,
            input_size=self.input_size,
            timings=dict(self.timings),
        )

    def dense(self, i: int) -> np.ndarray:
        """Mask ``i`` pasted into an image-sized (H, W) bool array (one mask's memory)."""
        out = np.zeros(self.image_hw, bool)
        x0, y0, x1, y1 = (int(v) for v in self.boxes[i])
        out[y0 : y1 + 1, x0 : x1 + 1] = self.crops[i]
        return out

    def to_tile_masks(self) -> TileMasks:
        """geoalps's ``TileMasks``: the same crops, empty masks dropped, boxes as half-open
        (row0, col0, row1, col1), and the embedding cells that cover the image as
        ``embedding_extent``. Cost: one pass over the crops; they are shared, not copied."""
        kept = [i for i, crop in enumerate(self.crops) if crop.any()]
        x0, y0, x1, y1 = self.boxes[kept].T
        return TileMasks(
            [self.crops[i] for i in kept],
            np.stack([y0, x0, y1 + 1, x1 + 1], axis=1),
            self.scores[kept],
            tile_shape=tuple(int(v) for v in self.image_hw),
            embedding=self.embedding,
            embedding_extent=self.embedding_extent(),
        )

    def embedding_extent(self) -> tuple[int, int]:
        """(rows, cols) of embedding cells that cover the image.

        The encoder sees the image resized so its long side is the model's input size, padded
        to a square: only the top-left cells of the embedding grid hold image.
        """
        grid = self.embedding.shape[-1]
        in_h, in_w = self.input_size
        long_side = max(in_h, in_w)
        if not long_side:
            return grid, grid
        return (
            max(1, int(np.ceil(in_h / long_side * grid))),
            max(1, int(np.ceil(in_w / long_side * grid))),
        )


def check_image(image: np.ndarray, valid: np.ndarray | None) -> None:
    """Both generators' input contract: an (H, W, 3) uint8 image, ``valid`` of shape (H, W)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {getattr(image, 'shape', None)}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if valid is not None and np.shape(valid) != image.shape[:2]:
        raise ValueError(f"valid must be an array of shape {image.shape[:2]}, got {np.shape(valid)}")
