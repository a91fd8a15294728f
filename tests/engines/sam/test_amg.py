"""geoalps.engines.sam.amg: the fast generator gives segment_anything's masks, skips nodata prompts and
returns the full image's embedding. Tiny random-weight model, CPU, a few seconds per test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

from geoalps.engines.sam.amg import (
    FastMaskGenerator,
    _ExactCells,
    SamMasks,
    _StabilityBound,
    reference_generate,
    remove_small_regions,
    boxes_from_logits,
    upsample_logits,
)
from geoalps.engines.sam.decoder import PointPromptDecoder
from geoalps.engines.sam.models import load_sam

# Low thresholds so that the tiny random model's masks survive (random IoU predictions).
SETTINGS = dict(pred_iou_thresh=0.0, stability_score_thresh=0.1)


def synthetic_image(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    """Rectangles and discs of random colours on grey, with a little noise."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 90, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(12):
        colour = rng.integers(0, 255, 3)
        if rng.random() < 0.5:
            y0, x0 = rng.integers(0, h - 40), rng.integers(0, w - 40)
            image[y0 : y0 + rng.integers(20, 120), x0 : x0 + rng.integers(20, 150)] = colour
        else:
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 60)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = colour
    noisy = image + rng.normal(0, 5, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    """The tiny model loaded through the user's path (a checkpoint file and load_sam)."""
    return load_sam(tiny_checkpoint, device="cpu")[0]


@pytest.fixture(scope="module")
def image():
    return synthetic_image()


def match_ious(expected: SamMasks, got: SamMasks) -> np.ndarray:
    """For each expected mask, the best IoU with any mask in ``got`` (two empty masks: 1)."""
    a = expected.masks.reshape(len(expected), -1).astype(np.float32)
    b = got.masks.reshape(len(got), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return iou.max(1)


def assert_same_masks(expected: SamMasks, got: SamMasks) -> None:
    assert len(got) == len(expected)
    assert (match_ious(expected, got) >= 0.99).all()
    assert (match_ious(got, expected) >= 0.99).all()
    np.testing.assert_allclose(np.sort(got.scores), np.sort(expected.scores), atol=1e-5)
    assert sorted(map(tuple, got.boxes)) == sorted(map(tuple, expected.boxes))


def test_same_masks_as_segment_anything(model, image):
    settings = dict(points_per_side=8, **SETTINGS)
    expected = reference_generate(model, image, **settings)
    got = FastMaskGenerator(model, **settings).generate(image)

    assert len(expected) >= 10  # the test means something only with many masks
    assert_same_masks(expected, got)
    assert got.masks.shape == (len(got), 300, 400) and got.masks.dtype == bool
    assert got.scores.dtype == np.float32 and got.boxes.dtype == np.int64
    np.testing.assert_allclose(got.stability, expected.stability, atol=1e-6)


def test_same_masks_with_crop_layers(model, image):
    settings = dict(points_per_side=3, crop_n_layers=1, **SETTINGS)
    expected = reference_generate(model, image, **settings)
    got = FastMaskGenerator(model, **settings).generate(image)

    assert len({tuple(b) for b in expected.crop_boxes}) > 1
    assert_same_masks(expected, got)
    # The embedding is the full image's, not the last crop's.
    np.testing.assert_array_equal(got.embedding, expected.embedding)


def test_embedding_is_the_full_image_encoder_output(model, image):
    predictor = SamPredictor(model)
    predictor.set_image(image)
    expected = predictor.get_image_embedding()[0].numpy()

    got = FastMaskGenerator(model, points_per_side=2, crop_n_layers=1).generate(image)

    assert got.embedding.shape == (64, 64, 64) and got.embedding.dtype == np.float32
    np.testing.assert_array_equal(got.embedding, expected)
    assert got.input_size == (768, 1024) == tuple(predictor.input_size)


def test_prompts_on_nodata_are_skipped(model, image, monkeypatch):
    valid = np.ones(image.shape[:2], bool)
    valid[:, :200] = False  # left half is nodata
    generator = FastMaskGenerator(model, points_per_side=6, **SETTINGS)
    calls = []
    decode = PointPromptDecoder.decode

    def counting(self, points, min_iou=None):
        calls.append(len(points))
        return decode(self, points, min_iou)

    monkeypatch.setattr(PointPromptDecoder, "decode", counting)
    got = generator.generate(image, valid=valid)

    assert sum(calls) == 18  # half of the 6x6 grid
    assert len(got) > 0
    assert (got.points[:, 0] >= 200).all()
    assert valid[got.points[:, 1].astype(int), got.points[:, 0].astype(int)].all()


def test_all_nodata_gives_no_masks_but_an_embedding(model, image):
    got = FastMaskGenerator(model, points_per_side=4).generate(
        image, valid=np.zeros(image.shape[:2], bool)
    )
    assert len(got) == 0 and got.masks.shape == (0, 300, 400)
    assert got.embedding.shape == (64, 64, 64)
    assert got.mask_embeddings().shape == (0, 64)


def test_generate_many_matches_generate(model, image):
    other = synthetic_image(256, 256, seed=1)
    generator = FastMaskGenerator(model, points_per_side=3, encoder_batch_size=2, **SETTINGS)
    both = generator.generate_many([image, other])
    for single, batched in zip([generator.generate(image), generator.generate(other)], both):
        assert_same_masks(single, batched)


def test_sdpa_encoder_matches(model, image):
    plain = FastMaskGenerator(model, points_per_side=2, sdpa=False).generate(image)
    sdpa = FastMaskGenerator(model, points_per_side=2, sdpa=True).generate(image)
    np.testing.assert_allclose(sdpa.embedding, plain.embedding, atol=1e-4)


@pytest.mark.parametrize(
    "input_size, orig_size",
    [((1024, 1024), (1024, 1024)), ((768, 1024), (300, 400)), ((1024, 683), (1500, 1000))],
)
def test_stability_bound_is_an_upper_bound(model, input_size, orig_size):
    gen = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(
        torch.randn(12, 1, 16, 16, generator=gen), (256, 256), mode="bilinear"
    )
    low = base[:, 0] * torch.linspace(0.5, 20, 12)[:, None, None]  # smooth, like SAM logits
    exact = torch.stack(
        [
            torch.nan_to_num(
                (up > 1).sum() / (up > -1).sum(), nan=0.0
            )
            for up in model.postprocess_masks(low[:, None], input_size, orig_size)[:, 0]
        ]
    )
    bound = _StabilityBound(input_size, orig_size, 1024, 256, "cpu").upper(low, 0.0, 1.0)
    assert (bound >= exact - 1e-6).all()
    assert (bound < exact + 0.3).all()  # and tight enough to reject clearly unstable masks
    assert (bound < 0.9).sum() >= 3


@pytest.mark.parametrize(
    "input_size, orig_size",
    [((1024, 1024), (1024, 1024)), ((768, 1024), (300, 400)), ((1024, 768), (1024, 768))],
)
def test_upsample_logits_is_postprocess_masks_bit_for_bit(model, input_size, orig_size):
    low = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0)) * 5
    expected = model.postprocess_masks(low[:, None], input_size, orig_size)[:, 0]
    assert torch.equal(upsample_logits(model, low, input_size, orig_size), expected)


def test_boxes_from_logits_equal_segment_anything_boxes():
    from segment_anything.utils.amg import batched_mask_to_box

    logits = torch.randn(6, 50, 70, generator=torch.Generator().manual_seed(0)) - 2.5
    logits[0] = -1.0  # empty mask
    logits[1, 10, 20] = 3.0  # one pixel
    assert torch.equal(boxes_from_logits(logits, 0.0), batched_mask_to_box(logits > 0.0))


def test_mask_embeddings_average_under_each_mask():
    embedding = np.zeros((2, 64, 64), np.float32)
    embedding[0, :, :32] = 1.0  # left half of the 1024 px input
    embedding[1] = 5.0
    masks = np.zeros((2, 512, 512), bool)
    masks[0, :, :100] = True  # inside the left half (the image fills 1024 x 1024 here)
    masks[1, :, 300:] = True  # right half
    result = SamMasks(
        masks=masks,
        scores=np.ones(2, np.float32),
        stability=np.ones(2, np.float32),
        boxes=np.zeros((2, 4), np.int64),
        points=np.zeros((2, 2), np.float32),
        crop_boxes=np.zeros((2, 4), np.int64),
        embedding=embedding,
        input_size=(1024, 1024),
    )
    features = result.mask_embeddings()
    np.testing.assert_allclose(features, [[1.0, 5.0], [0.0, 5.0]], atol=1e-5)


def test_remove_small_regions_fills_holes_and_drops_islands():
    masks = np.zeros((1, 40, 40), bool)
    masks[0, 5:30, 5:30] = True
    masks[0, 10, 10] = False  # a one-pixel hole
    masks[0, 35, 35] = True  # a one-pixel island
    result = SamMasks(
        masks=masks,
        scores=np.ones(1, np.float32),
        stability=np.ones(1, np.float32),
        boxes=np.array([[5, 5, 35, 35]]),
        points=np.zeros((1, 2), np.float32),
        crop_boxes=np.array([[0, 0, 40, 40]]),
        embedding=None,
        input_size=(1024, 1024),
    )
    cleaned = remove_small_regions(result, min_area=5, nms_thresh=0.7)
    expected = np.zeros((40, 40), bool)
    expected[5:30, 5:30] = True
    np.testing.assert_array_equal(cleaned.masks[0], expected)
    assert cleaned.boxes.tolist() == [[5, 5, 29, 29]]


def test_rejects_bad_inputs(model, image):
    generator = FastMaskGenerator(model, points_per_side=2)
    with pytest.raises(ValueError, match="uint8"):
        generator.generate(image.astype(np.float32))
    with pytest.raises(ValueError, match="valid"):
        generator.generate(image, valid=np.ones((10, 10), bool))


# -- exact statistics from the low-resolution cells (1024 px long side) ----------------------


def smooth_logits(n: int, seed: int, ties: bool = False) -> torch.Tensor:
    """(n, 256, 256) SAM-like logits: smooth blobs from strong to weak contrast."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(
        torch.randn(n, 1, 16, 16, generator=gen), (256, 256), mode="bilinear"
    )[:, 0]
    low = base * torch.linspace(0.5, 50, n)[:, None, None]
    if ties:  # multiples of 1/4: many upsampled pixels land exactly on the thresholds
        low = (low * 4).round() / 4
    return low


@pytest.mark.parametrize(
    "out_hw", [(1024, 1024), (1024, 683), (600, 1024), (1023, 1022), (5, 1024), (1024, 1)]
)
@pytest.mark.parametrize("ties", [False, True])
def test_exact_cells_equal_segment_anything_stability_boxes_and_masks(model, out_hw, ties):
    low = smooth_logits(10, seed=out_hw[1], ties=ties)
    low[0] = -3.0  # empty mask
    low[1, 120, 7] = 2.0  # a single bump
    low[2, 0, 255] = 1.0  # exactly on the stability threshold at an image corner
    assert _ExactCells.applies(model, out_hw, out_hw)
    up = model.postprocess_masks(low[:, None], out_hw, out_hw)[:, 0]
    threshold, offset = model.mask_threshold, 1.0

    counts, boxes, masks = _ExactCells(out_hw, 256, "cpu")(
        low, [threshold + offset, threshold - offset], threshold
    )

    stability = counts[:, 0].int() / counts[:, 1].int()
    expected = calculate_stability_score(up, threshold, offset)
    assert torch.equal(stability.nan_to_num(-1.0), expected.nan_to_num(-1.0))
    assert torch.equal(boxes, batched_mask_to_box(up > threshold))
    for cell_mask, exact in zip(masks, up > threshold):
        np.testing.assert_array_equal(cell_mask.to_mask(out_hw), exact.numpy())


def test_exact_cells_on_tiny_model_logits(model):
    """The decoder's own logits for a grid of prompts, thresholds 0: same stability and boxes."""
    image = synthetic_image(1024, 1024, seed=3)
    generator = FastMaskGenerator(model, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    (embedding,), (input_size,) = generator._encode([image])
    generator.decoder.set_embedding(embedding)
    points = torch.cartesian_prod(torch.arange(16, 1024, 64), torch.arange(16, 1024, 64))
    _, _, low = generator.decoder.decode(points.double(), None)
    low = low.flatten(0, 1)
    up = model.postprocess_masks(low[:, None], input_size, (1024, 1024))[:, 0]

    counts, boxes, _ = _ExactCells((1024, 1024), 256, "cpu")(low, [1.0, -1.0], 0.0)

    stability = counts[:, 0].int() / counts[:, 1].int()  # 0/0 = nan for empty masks, as SAM's
    expected = calculate_stability_score(up, 0.0, 1.0)
    assert torch.equal(stability.nan_to_num(-1.0), expected.nan_to_num(-1.0))
    assert (expected > 0).sum() >= 20  # many non-empty masks
    assert torch.equal(boxes, batched_mask_to_box(up > 0.0))


@pytest.mark.parametrize("shape", [(1024, 1024), (640, 1024)])
def test_same_masks_as_segment_anything_on_full_size_tiles(model, shape, monkeypatch):
    """Thresholds 0 on images whose long side is the model input: the cell path, exact."""
    image = synthetic_image(*shape, seed=2)
    settings = dict(points_per_side=12, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    expected = reference_generate(model, image, **settings)
    calls = []
    original = _ExactCells.__call__

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(_ExactCells, "__call__", counting)
    got = FastMaskGenerator(model, **settings).generate(image)

    assert calls and len(expected) >= 10
    assert_same_masks(expected, got)
    assert (match_ious(expected, got) == 1.0).all()
    # Same (box, stability) pairs. Stability is exact for equal logits (tests above); the
    # decoders' logits differ by float rounding (up to 3e-4 with this model's x1000 gains), which
    # moves a few pixels at the +-1 thresholds.
    def pairs(result: SamMasks) -> tuple[list, np.ndarray]:
        stability = np.nan_to_num(result.stability, nan=-1.0)
        ordered = sorted((tuple(b), float(s)) for b, s in zip(result.boxes.tolist(), stability))
        return [b for b, _ in ordered], np.array([s for _, s in ordered])

    boxes, stability = pairs(got)
    ref_boxes, ref_stability = pairs(expected)
    assert boxes == ref_boxes
    np.testing.assert_allclose(stability, ref_stability, atol=1e-4)
