"""geoalps.engines.sam2.decoder: the sam engine's rearranged decoder gives sam2's mask decoder's
logits and predicted IoUs (called as SAM2ImagePredictor._predict calls it, multimask)."""
from __future__ import annotations

import pytest
import torch
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.transformer import TwoWayTransformer

from geoalps.engines.sam2.decoder import Sam2PromptDecoder
from tests.sam_models import build_tiny_sam2
from tests.floats import assert_float32_close


def _model(seed: int, obj_scores: bool, high_res: bool, depth: int = 2):
    """The tiny test model; other decoder variants swapped in with sam2's own classes. The
    transposed convolutions get random taps (the test gains repeat one tap, which would hide a
    wrong pixel order inside the 2x2 blocks)."""
    model = build_tiny_sam2(seed=seed)
    dim = model.sam_prompt_embed_dim
    if not (obj_scores and high_res and depth == 2):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.sam_mask_decoder = MaskDecoder(
                transformer_dim=dim,
                transformer=TwoWayTransformer(depth=depth, embedding_dim=dim, mlp_dim=64, num_heads=8),
                use_high_res_features=high_res,
                iou_prediction_use_sigmoid=not obj_scores,
                pred_obj_scores=obj_scores,
                pred_obj_scores_mlp=obj_scores,
            ).eval()
    decoder = model.sam_mask_decoder
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index in (0, 3):
            conv = decoder.output_upscaling[index]
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.5)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.5)
    assert decoder.pred_obj_scores == obj_scores and decoder.use_high_res_features == high_res
    return model


@pytest.mark.parametrize(
    "obj_scores, high_res, depth",
    [(True, True, 2), (False, False, 2), (True, False, 1), (False, True, 3)],
    ids=["release-like", "plain", "obj-scores-one-layer", "high-res-three-layers"],
)
def test_matches_sam2_mask_decoder(obj_scores, high_res, depth):
    model = _model(1, obj_scores, high_res, depth)
    dim = model.sam_prompt_embed_dim
    gen = torch.Generator().manual_seed(0)
    features = {
        "image_embed": torch.randn(1, dim, 64, 64, generator=gen),
        "high_res_feats": [torch.randn(1, dim // 8, 256, 256, generator=gen),
                           torch.randn(1, dim // 4, 128, 128, generator=gen)],
    }
    points = torch.rand(5, 2, generator=gen) * 1024
    prompt_encoder = model.sam_prompt_encoder
    with torch.inference_mode():  # SAM2ImagePredictor._predict, one point per prompt
        sparse, dense = prompt_encoder(points=(points[:, None], torch.ones(5, 1, dtype=torch.int)),
                                       boxes=None, masks=None)
        expected_masks, expected_iou, _, _ = model.sam_mask_decoder(
            image_embeddings=features["image_embed"],
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=True,
            high_res_features=features["high_res_feats"],
        )
    decoder = Sam2PromptDecoder(model)
    decoder.set_embedding(features)
    iou, index, masks = decoder.decode(points, min_iou=None)

    assert torch.equal(index, torch.arange(5))
    assert masks.shape == expected_masks.shape == (5, 3, 256, 256)
    scale = expected_masks.abs().max()
    assert_float32_close(masks, expected_masks)
    assert_float32_close(iou, expected_iou)
    if high_res:  # the skip features matter: without them the logits differ
        features["high_res_feats"] = [torch.zeros_like(f) for f in features["high_res_feats"]]
        decoder.set_embedding(features)
        assert (decoder.decode(points, None)[2] - expected_masks).abs().max() > 1e-2 * scale


def test_prompts_below_the_iou_threshold_skip_the_upscaling(sam2_model):
    dim = sam2_model.sam_prompt_embed_dim
    gen = torch.Generator().manual_seed(0)
    decoder = Sam2PromptDecoder(sam2_model)
    decoder.set_embedding({
        "image_embed": torch.randn(1, dim, 64, 64, generator=gen),
        "high_res_feats": [torch.randn(1, dim // 8, 256, 256, generator=gen),
                           torch.randn(1, dim // 4, 128, 128, generator=gen)],
    })
    points = torch.rand(6, 2, generator=gen) * 1024
    iou, _, masks = decoder.decode(points, min_iou=None)
    threshold = float(iou.max(dim=1).values.median())

    iou_kept, index, kept = decoder.decode(points, min_iou=threshold)

    assert_float32_close(iou_kept, iou)
    expected = (iou_kept > threshold).any(dim=1).nonzero()[:, 0]
    assert 0 < len(index) < 6 and torch.equal(index, expected)
    assert_float32_close(kept, masks[index])


def _random_features(dim: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "image_embed": torch.randn(1, dim, 64, 64, generator=gen),
        "high_res_feats": [torch.randn(1, dim // 8, 256, 256, generator=gen),
                           torch.randn(1, dim // 4, 128, 128, generator=gen)],
    }


def test_bfloat16_decoder_is_an_approximation_on_a_copy(sam2_model):
    """The opt-in bf16 decoder runs on a bf16 copy (the model stays float32), returns float32,
    and stays within bf16 rounding of the float32 decoder: IoUs to 0.02, logits to 3% of their
    range, the thresholded masks (256 x 256) at IoU >= 0.9 with float32's."""
    features = _random_features(sam2_model.sam_prompt_embed_dim)
    points = torch.rand(6, 2, generator=torch.Generator().manual_seed(1)) * 1024
    exact = Sam2PromptDecoder(sam2_model)
    exact.set_embedding(features)
    iou, _, masks = exact.decode(points, min_iou=None)

    approx = Sam2PromptDecoder(sam2_model, dtype=torch.bfloat16)
    approx.set_embedding(features)
    iou_bf, index, masks_bf = approx.decode(points, min_iou=None)

    assert approx.decoder.iou_token.weight.dtype == torch.bfloat16
    assert sam2_model.sam_mask_decoder.iou_token.weight.dtype == torch.float32
    assert iou_bf.dtype == masks_bf.dtype == torch.float32 and torch.equal(index, torch.arange(6))
    assert (iou_bf - iou).abs().max() < 0.02
    assert (masks_bf - masks).abs().max() < 0.03 * masks.abs().max()
    a, b = masks > 0, masks_bf > 0
    union = (a | b).sum((-1, -2))
    mask_iou = torch.where(union > 0, (a & b).sum((-1, -2)) / union.clamp_min(1), torch.ones(()))
    assert mask_iou.min() >= 0.9
    assert not torch.equal(masks_bf, masks)  # bf16 arithmetic did run


def test_decoder_dtype_must_be_float32_or_bfloat16(sam2_model):
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        Sam2PromptDecoder(sam2_model, dtype=torch.float16)
