"""geoalps.engines.sam.fast_generator: the fast generator gives segment_anything's masks, skips
nodata prompts and returns the full image's embedding. Tiny random-weight model, CPU, a few
seconds per test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.amg import batched_mask_to_box, calculate_stability_score

from geoalps.engines.sam.decoder import PointPromptDecoder
from geoalps.engines.sam.exact_cells import ExactCells
from geoalps.engines.sam.fast_generator import SKIP_LAG
from geoalps.engines.sam.generators import FastMaskGenerator, SamMasks, reference_generate
from geoalps.objects.features import pooled_embedding
from tests.floats import assert_float32_close

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
def image():
    return synthetic_image()


def dense_masks(result: SamMasks) -> np.ndarray:
    """(N, H, W) bool: every mask pasted into an image-sized array."""
    return np.stack([result.dense(i) for i in range(len(result))]).reshape(len(result), *result.image_hw)


def match_ious(expected: SamMasks, got: SamMasks) -> np.ndarray:
    """For each expected mask, the best IoU with any mask in ``got`` (two empty masks: 1)."""
    a = dense_masks(expected).reshape(len(expected), -1).astype(np.float32)
    b = dense_masks(got).reshape(len(got), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return iou.max(1)


def assert_same_masks(expected: SamMasks, got: SamMasks) -> None:
    """Same count (more than zero: two empty results would match trivially), every mask matched
    by IoU >= 0.99 both ways, same boxes, scores to float32 rounding."""
    assert len(got) == len(expected) > 0
    assert (match_ious(expected, got) >= 0.99).all()
    assert (match_ious(got, expected) >= 0.99).all()
    assert_float32_close(np.sort(got.scores), np.sort(expected.scores))
    assert sorted(map(tuple, got.boxes)) == sorted(map(tuple, expected.boxes))


def test_assert_same_masks_fails_when_both_sides_are_empty():
    """Two results without masks prove nothing about the generators: the check must not pass."""
    empty = SamMasks.empty((8, 8), np.zeros((4, 2, 2), np.float32), (8, 8))
    with pytest.raises(AssertionError):
        assert_same_masks(empty, empty)


def assert_crops_fit_boxes(result: SamMasks) -> None:
    """Each crop has its box's shape and, unless empty, a pixel on each of its four sides."""
    for crop, (x0, y0, x1, y1) in zip(result.crops, result.boxes.tolist()):
        assert crop.dtype == bool and crop.flags.c_contiguous
        assert crop.shape == (y1 - y0 + 1, x1 - x0 + 1)
        if crop.any():
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        else:
            assert crop.shape == (1, 1)


def test_same_masks_as_segment_anything(model, image):
    settings = dict(points_per_side=8, **SETTINGS)
    expected = reference_generate(model, image, **settings)
    got = FastMaskGenerator(model, **settings).generate(image)

    assert len(expected) >= 10  # the test means something only with many masks
    assert_same_masks(expected, got)
    assert got.image_hw == (300, 400) and len(got.crops) == len(got)
    assert_crops_fit_boxes(got)
    assert_crops_fit_boxes(expected)
    assert got.scores.dtype == np.float32 and got.boxes.dtype == np.int64
    # Stability is a ratio of pixel counts at logits +-1: float rounding of the logits may move a
    # pixel on another CPU, so allow a few pixels of the smallest mask, not float32 units.
    smallest_mask_px = max(1, min(int(crop.sum()) for crop in got.crops))
    assert np.abs(got.stability - expected.stability).max() <= 3 / smallest_mask_px


def test_same_masks_with_crop_layers(model, image):
    settings = dict(points_per_side=3, crop_n_layers=1, **SETTINGS)
    expected = reference_generate(model, image, **settings)
    got = FastMaskGenerator(model, **settings).generate(image)

    assert len({tuple(b) for b in expected.crop_boxes}) > 1
    assert_same_masks(expected, got)
    assert_crops_fit_boxes(got)
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


def decoded_prompt_counts(monkeypatch) -> list[int]:
    """A list that records how many prompts each ``PointPromptDecoder.decode`` call decodes."""
    calls: list[int] = []
    decode = PointPromptDecoder.decode

    def counting(self, points, min_iou=None):
        calls.append(len(points))
        return decode(self, points, min_iou)

    monkeypatch.setattr(PointPromptDecoder, "decode", counting)
    return calls


def test_prompts_on_nodata_are_skipped(model, image, monkeypatch):
    valid = np.ones(image.shape[:2], bool)
    valid[:, :200] = False  # left half is nodata
    generator = FastMaskGenerator(model, points_per_side=6, **SETTINGS)
    calls = decoded_prompt_counts(monkeypatch)
    got = generator.generate(image, valid=valid)

    assert sum(calls) == 18  # half of the 6x6 grid
    assert len(got) > 0
    assert (got.points[:, 0] >= 200).all()
    assert valid[got.points[:, 1].astype(int), got.points[:, 0].astype(int)].all()


def test_all_nodata_gives_no_masks_but_an_embedding(model, image):
    got = FastMaskGenerator(model, points_per_side=4).generate(
        image, valid=np.zeros(image.shape[:2], bool)
    )
    assert len(got) == 0 and got.crops == [] and got.image_hw == (300, 400)
    assert got.embedding.shape == (64, 64, 64)
    tile_masks = got.to_tile_masks()
    assert len(tile_masks) == 0 and tile_masks.tile_shape == (300, 400)
    assert pooled_embedding(tile_masks).shape == (0, 64)


def test_generate_many_matches_generate(model, image):
    other = synthetic_image(256, 256, seed=1)
    generator = FastMaskGenerator(model, points_per_side=3, encoder_batch_size=2, **SETTINGS)
    both = generator.generate_many([image, other])
    for single, batched in zip([generator.generate(image), generator.generate(other)], both):
        assert_same_masks(single, batched)


def test_sdpa_encoder_matches(model, image):
    plain = FastMaskGenerator(model, points_per_side=2, sdpa=False).generate(image)
    sdpa = FastMaskGenerator(model, points_per_side=2, sdpa=True).generate(image)
    assert_float32_close(sdpa.embedding, plain.embedding, ulps=1024)  # another attention kernel


def test_small_regions_are_removed_as_in_the_reference(model, image):
    settings = dict(points_per_side=4, min_mask_region_area=400, **SETTINGS)
    expected = reference_generate(model, image, **settings)  # scipy port without OpenCV
    got = FastMaskGenerator(model, **settings).generate(image)
    assert len(expected) > 0
    assert_same_masks(expected, got)
    assert_crops_fit_boxes(got)


def test_rejects_bad_inputs(model, image):
    generator = FastMaskGenerator(model, points_per_side=2)
    with pytest.raises(ValueError, match="uint8"):
        generator.generate(image.astype(np.float32))
    with pytest.raises(ValueError, match="valid"):
        generator.generate(image, valid=np.ones((10, 10), bool))


# -- 1024 px long side: masks, boxes and stability from the low-resolution cells ---------------


def test_exact_cells_on_tiny_model_logits(model):
    """The decoder's own logits for a grid of prompts, thresholds 0: same stability and boxes."""
    image = synthetic_image(1024, 1024, seed=3)
    generator = FastMaskGenerator(model, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ((embedding, input_size, _),) = generator.encoder.encode_all([image])
    generator.decoder.set_embedding(embedding)
    points = torch.cartesian_prod(torch.arange(16, 1024, 64), torch.arange(16, 1024, 64))
    _, _, low = generator.decoder.decode(points.double(), None)
    low = low.flatten(0, 1)
    up = model.postprocess_masks(low[:, None], input_size, (1024, 1024))[:, 0]

    counts, boxes, _ = ExactCells((1024, 1024), 256, "cpu")(low, [1.0, -1.0], 0.0)

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
    original = ExactCells.__call__

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(ExactCells, "__call__", counting)
    got = FastMaskGenerator(model, **settings).generate(image)

    assert calls and len(expected) >= 10
    assert_same_masks(expected, got)
    assert (match_ious(expected, got) == 1.0).all()
    assert_crops_fit_boxes(got)
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


@pytest.mark.parametrize("workers", [2, 3])
def test_batches_decoded_in_threads_give_the_same_masks(model, image, workers):
    """``decoder_threads`` > 1 decodes batches at once, one intra-op thread each (small batches
    here, so several batches and a partial last one); masks, order and scores are those of one
    batch after another, and torch's thread count is restored afterwards."""
    settings = dict(points_per_side=7, points_per_batch=4, **SETTINGS)
    before = torch.get_num_threads()
    serial = FastMaskGenerator(model, decoder_threads=1, **settings).generate(image)
    threaded_generator = FastMaskGenerator(model, decoder_threads=workers, **settings)
    assert threaded_generator._decode_workers() == workers and threaded_generator.decoder_batch == 4
    threaded = threaded_generator.generate(image)  # 13 batches of 4 (49 prompts), the last partial
    assert torch.get_num_threads() == before
    assert len(serial) > 0
    assert_same_masks(serial, threaded)
    np.testing.assert_array_equal(threaded.boxes, serial.boxes)  # same order (NMS ties)
    assert_float32_close(threaded.scores, serial.scores)


def _late_prompts_in_stable_masks(result: SamMasks, generator: FastMaskGenerator, min_stability: float) -> int:
    """Pairs of kept masks (a, b): a's stability at least ``min_stability``, b's prompt in a
    decoder batch ``SKIP_LAG`` or more after a's, and b's prompt point inside mask a."""
    h, w = result.image_hw
    grid = (generator.point_grids[0] * np.array([[w, h]])).astype(np.float32)
    index = np.abs(result.points[:, None, :] - grid[None]).sum(-1).argmin(1)  # prompt of each mask
    batch = index // generator.decoder_batch
    xy = np.floor(result.points).astype(int)
    pairs = 0
    for a in np.flatnonzero(result.stability >= min_stability):
        mask = result.dense(a)
        late = batch >= batch[a] + SKIP_LAG
        pairs += int(mask[xy[late, 1], xy[late, 0]].sum())
    return pairs


def test_skip_covered_stability_is_an_opt_in_that_skips_prompts_inside_stable_masks(model, image, monkeypatch):
    """Off by default. On, a prompt whose point lies in a mask kept (before NMS) with stability
    >= the setting, from a decoder batch SKIP_LAG or more before its own, is not decoded: fewer
    prompts decoded, counted in the timings, and no kept mask's prompt lies in such a mask (the
    default has such masks); the same masks on one thread and on two."""
    settings = dict(points_per_side=16, **SETTINGS)
    calls = decoded_prompt_counts(monkeypatch)
    default_generator = FastMaskGenerator(model, **settings)
    assert default_generator.skip_covered_stability is None
    default = default_generator.generate(image)
    assert sum(calls) == 256 and "skipped_prompts" not in default.timings
    calls.clear()
    skipping = FastMaskGenerator(model, skip_covered_stability=0.4, decoder_threads=1, **settings)
    one = skipping.generate(image)
    decoded = sum(calls)
    two = FastMaskGenerator(model, skip_covered_stability=0.4, decoder_threads=2, **settings).generate(image)

    assert 0 < decoded < 256 and decoded + one.timings["skipped_prompts"] == 256
    assert two.timings["skipped_prompts"] == one.timings["skipped_prompts"]
    assert len(one) > 0
    assert _late_prompts_in_stable_masks(default, default_generator, 0.4) > 0
    assert _late_prompts_in_stable_masks(one, skipping, 0.4) == 0
    assert_same_masks(one, two)
    np.testing.assert_array_equal(one.boxes, two.boxes)
    assert_float32_close(one.scores, two.scores)
    with pytest.raises(ValueError, match="skip_covered_stability"):
        FastMaskGenerator(model, skip_covered_stability=1.5)
