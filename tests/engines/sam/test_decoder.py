"""geoalps.engines.sam.decoder: the rearranged decoder gives segment_anything's masks and scores."""
from __future__ import annotations

import pytest
import torch

from geoalps.engines.sam.decoder import PointPromptDecoder
from tests.sam_models import build_tiny_sam
from tests.floats import assert_float32_close


@pytest.mark.parametrize(
    "overrides",
    [{}, {"decoder_depth": 1, "prompt_embed_dim": 32}, {"decoder_depth": 3}],
    ids=["tiny", "one-layer", "three-layers"],
)
def test_matches_mask_decoder(overrides):
    model = build_tiny_sam(seed=1, **overrides)
    gen = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, model.prompt_encoder.embed_dim, 64, 64, generator=gen)
    points = torch.rand(5, 2, generator=gen) * 1024
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(
            points=(points[:, None], torch.ones(5, 1, dtype=torch.int)), boxes=None, masks=None
        )
        expected_masks, expected_iou = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    decoder = PointPromptDecoder(model)
    decoder.set_embedding(embedding)
    masks, iou = decoder(points)

    assert masks.shape == expected_masks.shape == (5, 3, 256, 256)
    assert_float32_close(masks, expected_masks)
    assert_float32_close(iou, expected_iou)
    # With an IoU threshold the last layer's image tokens are formed only for prompts that
    # pass (all of them here): the IoU token attends to them unformed (a two- or three-layer
    # decoder), the same scores and masks to float rounding.
    iou_lazy, index, masks_lazy = decoder.decode(points, min_iou=float(expected_iou.min()) - 1.0)
    assert index.tolist() == [0, 1, 2, 3, 4]
    assert_float32_close(iou_lazy, expected_iou)
    assert_float32_close(masks_lazy, expected_masks)


def test_needs_an_embedding_first():
    with pytest.raises(RuntimeError, match="set_embedding"):
        PointPromptDecoder(build_tiny_sam())(torch.zeros(1, 2))


def test_prompts_below_the_iou_threshold_skip_the_upscaling():
    model = build_tiny_sam(seed=2)
    gen = torch.Generator().manual_seed(0)
    decoder = PointPromptDecoder(model)
    decoder.set_embedding(torch.randn(1, 64, 64, 64, generator=gen))
    points = torch.rand(6, 2, generator=gen) * 1024
    masks, iou = decoder(points)
    threshold = float(iou.max(dim=1).values.median())

    iou_kept, index, kept = decoder.decode(points, min_iou=threshold)

    # The kept prompts follow decode's own scores (the same as the full pass's, to rounding).
    assert_float32_close(iou_kept, iou)
    expected = (iou_kept > threshold).any(dim=1).nonzero()[:, 0]
    assert 0 < len(index) < 6 and torch.equal(index, expected)
    assert_float32_close(kept, masks[index])
