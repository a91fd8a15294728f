"""geoalps.engines.sam.batch_encoder: images encoded in batches get SamPredictor's embeddings,
in order, whatever the batch size."""
from __future__ import annotations

import numpy as np
import torch
from segment_anything import SamPredictor

from geoalps.engines.sam.batch_encoder import BatchEncoder
from tests.floats import assert_float32_close


def test_batches_give_set_image_embeddings_in_order(model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in [(300, 400, 3), (256, 256, 3), (64, 200, 3)]]
    predictor = SamPredictor(model)
    expected = []
    for image in images:
        predictor.set_image(image)
        expected.append((predictor.get_image_embedding().numpy(), tuple(predictor.input_size)))

    with torch.inference_mode():
        one = list(BatchEncoder(model, 1, autocast=False, sdpa=False, compile=False).encode_all(images))
        two = list(BatchEncoder(model, 2, autocast=False, sdpa=False, compile=False).encode_all(images))

    assert len(one) == len(two) == 3
    for (embedding, input_size), (a, size_a, _), (b, size_b, _) in zip(expected, one, two):
        np.testing.assert_array_equal(a.numpy(), embedding)  # one at a time: exactly set_image's
        assert tuple(size_a) == tuple(size_b) == input_size
        assert_float32_close(b.numpy(), embedding, ulps=1024)  # batched: another GEMM blocking


def test_chunked_global_attention_gives_the_encoders_embedding(model):
    """The CPU encoder path computes global attention a few query rows at a time (memory); with
    one image row per chunk the embedding is still segment_anything's to float rounding."""
    from geoalps.engines.sam.sdpa_encoder import encoder_forward_chunked

    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = model.image_encoder(x)
        one_row = encoder_forward_chunked(model.image_encoder, x, chunk_bytes=1)
        default = encoder_forward_chunked(model.image_encoder, x)
    assert any(blk.window_size == 0 for blk in model.image_encoder.blocks)  # a global block ran chunked
    assert_float32_close(one_row.numpy(), plain.numpy())
    assert_float32_close(default.numpy(), plain.numpy())
