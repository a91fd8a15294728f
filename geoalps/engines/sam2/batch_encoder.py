"""``Sam2BatchEncoder``: SAM 2's image encoder on batches of images, as ``SAM2ImagePredictor.set_image`` runs it.

Each image is resized to the model's square input with sam2's own transform (``SAM2Transforms``:
antialiased resize to 1024 x 1024, ImageNet normalisation), several share one encoder call
(``--tile-batch``), and the features are prepared as ``set_image`` prepares them: the FPN's two
high-resolution levels through the decoder's skip convolutions, ``no_mem_embed`` added to the
64 x 64 image embedding. Cost: hiera_tiny about 2-4 s per 1024 px image on 2 CPU cores.
"""
from __future__ import annotations

import time
from typing import Iterator, Sequence

import numpy as np
import torch
from sam2.modeling.sam2_base import SAM2Base
from sam2.utils.transforms import SAM2Transforms

from geoalps.engines.sam.batch_encoder import bf16_autocast

#: One image's features: ``image_embed`` (1, C, 64, 64) and ``high_res_feats`` (two maps).
Sam2Features = dict


class Sam2BatchEncoder:
    """Features of images, ``batch_size`` per encoder call (see module doc)."""

    def __init__(self, model: SAM2Base, batch_size: int, autocast: bool) -> None:
        self.model = model
        self.device = model.device
        self.batch_size = batch_size
        self.autocast = autocast
        self.transform = SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)
        size = model.image_size
        # the embedding grid of each FPN level, as SAM2ImagePredictor._bb_feat_sizes
        self.feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]

    def encode_all(self, images: Sequence[np.ndarray]) -> Iterator[tuple[Sam2Features, tuple[int, int], float]]:
        """(features, input size, encoder seconds) for each (H, W, 3) uint8 image, in order;
        the input size is the model's square input (the whole grid holds image)."""
        size = int(self.model.image_size)
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            t0 = time.perf_counter()
            features = self.encode(batch)
            seconds = (time.perf_counter() - t0) / len(batch)
            for feature in features:
                yield feature, (size, size), seconds

    def encode(self, images: Sequence[np.ndarray]) -> list[Sam2Features]:
        x = self.transform.forward_batch(list(images)).to(self.device)
        with bf16_autocast(self.device, self.autocast):
            backbone_out = self.model.forward_image(x)
            _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        b = len(images)
        feats = [
            feat.float().permute(1, 2, 0).reshape(b, -1, *hw)
            for feat, hw in zip(vision_feats[::-1], self.feat_sizes[::-1])
        ][::-1]
        return [
            {"image_embed": feats[-1][k : k + 1], "high_res_feats": [f[k : k + 1] for f in feats[:-1]]}
            for k in range(b)
        ]
