"""``FastMaskGenerator``: segment_anything's automatic masks for much less work.

It gives the masks segment_anything's ``SamAutomaticMaskGenerator`` gives (same model,
settings, point grid, filters and NMS, in the same order), as a ``SamMasks``:

- one encoder pass per image (or crop); several images can share one encoder batch
  (``BatchEncoder``);
- prompts decoded in batches by ``PointPromptDecoder`` (layer-0 image work shared by all
  prompts, upscaling as GEMMs one prompt at a time so it stays in cache: about 6x cheaper than
  ``mask_decoder`` on CPU for vit_b), and no upscaling at all for prompts none of whose masks
  can pass ``pred_iou_thresh``;
- predicted-IoU filter and a provable upper bound of the stability score on the 256x256 logits
  (``StabilityBound``); then, for images whose long side is the model input (1024 px tiles),
  the exact full-resolution stability scores, boxes and masks come from the logits' cells
  (``ExactCells``, bit-identical to segment_anything's) and no mask is upsampled at all; other
  sizes (and crops) upsample each candidate as segment_anything does;
- no RLE round trips: candidates are kept per cell (``CellMask``, about 20 kB) or bit-packed
  (128 kB) until NMS has chosen, and only the survivors become masks, cropped to their boxes;
- prompts on nodata pixels (``valid`` False) are skipped, and crops without a valid prompt are
  not encoded at all.

Costs, vit_b on 2 CPU cores, one 1024 px tile, 32x32 points: the encoder (13-30 s) plus about
30 ms a prompt for the decoder (about 18 ms for prompts whose three IoU predictions miss the
threshold: their masks are never upscaled) plus about 1-1.5 ms for each mask that passes the
IoU filter and the stability bound (5-10 ms when it has to be upsampled), plus about 1 ms for
each final mask; memory about 15 MB a prompt in a decoder batch (8 prompts on CPU) plus 20 kB
a candidate mask. benchmarks/sam_amg/README.md has the measured figures.
On CUDA the encoder and decoder run under bf16 autocast and the encoder uses
``scaled_dot_product_attention``; results then differ from float32 by bf16 rounding.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
)
from torchvision.ops.boxes import batched_nms, box_area

from geoalps.devices import autocast_dtype
from geoalps.engines.sam.batch_encoder import BatchEncoder, bf16_autocast
from geoalps.engines.sam.decoder import PointPromptDecoder
from geoalps.engines.sam.exact_cells import CellMask, ExactCells
from geoalps.engines.sam.postprocess import boxes_from_logits, remove_small_regions, upsample_logits
from geoalps.engines.sam.sam_masks import SamMasks, check_image
from geoalps.engines.sam.stability_bound import StabilityBound

CPU_DECODER_BATCH = 8  # vit_b prompts per CPU decoder call: larger batches fall out of cache
#: ``decoder_dtype`` values: float32 is faithful, bfloat16 and bfloat16-screen opt-ins (see
#: FastMaskGenerator); the dtype of the decoder whose masks are kept.
DECODER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "bfloat16-screen": torch.float32}
#: bfloat16-screen: prompts whose bf16 predicted IoUs all stay this far below ``pred_iou_thresh``
#: are dropped without a float32 pass. The largest bf16 IoU error measured is 25x smaller
#: (benchmarks/sam2_amg/README.md); a prompt it misjudges by more would lose its masks.
SCREEN_MARGIN = 0.05
SCORE_CHUNK = 16  # masks scored exactly at once (ExactCells' (K, 256, 256) temporaries stay in cache)
#: skip_covered_stability: the prompts of decoder batch j are checked against the masks of
#: batches 0 .. j - SKIP_LAG (at most this many batches decode at once), so which prompts are
#: skipped does not depend on the number of threads.
SKIP_LAG = 4


@dataclass
class _Job:
    """One crop of one image to encode and prompt (the full image is crop 0)."""

    image: int  # index into the images
    crop_box: list[int]  # XYXY, exclusive max, image pixels
    layer: int  # crop layer, picks the point grid
    points: np.ndarray  # (P, 2) prompts in crop pixels, nodata ones removed

    def pixels(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The crop of its image (a view)."""
        x0, y0, x1, y1 = self.crop_box
        return images[self.image][y0:y1, x0:x1]


@dataclass
class _Crop:
    """What the filters of one crop need."""

    box: list[int]  # XYXY, exclusive max, image pixels
    hw: tuple[int, int]
    input_size: tuple[int, int]  # the resized crop inside the model input
    edge_box: list[int]  # the image, for segment_anything's crop-edge filter
    bound: StabilityBound
    cells: ExactCells | None  # when masks are a plain 4x upsampling of the logits


@dataclass
class _Candidates:
    """One crop's masks so far past every filter, in crop pixels, masks kept compact."""

    boxes: list[torch.Tensor] = field(default_factory=list)
    iou: list[torch.Tensor] = field(default_factory=list)
    stability: list[torch.Tensor] = field(default_factory=list)
    points: list[torch.Tensor] = field(default_factory=list)
    masks: list[CellMask | np.ndarray] = field(default_factory=list)  # or bit-packed rows


@dataclass
class _CropMasks:
    """One crop's masks after its NMS, best first, boxes and points in image pixels."""

    crop_box: list[int]
    boxes: torch.Tensor
    iou: torch.Tensor
    stability: torch.Tensor
    points: torch.Tensor
    masks: list[CellMask | np.ndarray]


class FastMaskGenerator:
    """Automatic masks with SamAutomaticMaskGenerator's settings and results, at lower cost.

    Args:
        model: a segment_anything ``Sam`` (e.g. from ``geoalps.engines.sam.models.load_sam``).
        points_per_side: the point grid is ``points_per_side**2`` prompts per image.
        points_per_batch: prompts per decoder call on GPU (about 35 MB each for vit_b in fp32;
            halved automatically on out-of-memory). On CPU at most 8 (vit_b) are decoded at a time.
        pred_iou_thresh, stability_score_thresh, stability_score_offset, box_nms_thresh,
        crop_n_layers, crop_nms_thresh, crop_overlap_ratio, crop_n_points_downscale_factor,
        min_mask_region_area: as in ``SamAutomaticMaskGenerator``; small-region removal uses
            scipy (8-connectivity, as segment_anything's OpenCV call), no OpenCV needed.
        encoder_batch_size: images/crops per encoder call (default 1 on CPU, 4 on GPU).
        autocast: bf16 autocast for encoder and decoder (default: on for CUDA only).
        sdpa: encoder attention through ``scaled_dot_product_attention`` (default: CUDA only).
        compile: wrap the encoder in ``torch.compile`` (slow first call; for long GPU runs).
        decoder_dtype: ``"float32"`` (default: the reference generator's masks) or
            ``"bfloat16"``: the prompt decoder on a bf16 copy of the mask decoder, several times
            faster on CPUs with AMX/AVX512-BF16 but not the same masks (bf16 rounding moves
            predicted IoUs, stability and mask edges); an opt-in whose mask recall against the
            default is in benchmarks/sam2_amg/README.md. ``"bfloat16-screen"``: the predicted
            IoUs of every prompt from the bf16 copy first, then the float32 decoder only for
            prompts with a bf16 IoU above ``pred_iou_thresh - SCREEN_MARGIN`` (their masks and
            scores are float32): the default's masks unless bf16 misjudges an IoU by more than
            the margin (measured: 25x less); faster when most prompts fail the IoU filter
            (about 1.7x less decoder time when none passes). An opt-in (no proof of the bound).
        decoder_threads: CPU only: decoder batches decoded at once, each on one thread
            (0, default: torch's thread count; 1: one batch after another, on all threads).
        skip_covered_stability: opt-in, off (None) by default: a prompt whose point falls
            inside a mask already kept (past every filter, before NMS) with a stability score
            of at least this value is not decoded. Prompts go in grid order, batch by batch;
            batch j is checked against the masks of batches up to j - ``SKIP_LAG``. Fewer
            prompts decoded, not the same masks: its mask recall against the default is in
            benchmarks/sam2_amg/README.md. The tile's ``timings["skipped_prompts"]`` counts them.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int = 32,
        points_per_batch: int = 256,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        min_mask_region_area: int = 0,
        *,
        encoder_batch_size: int | None = None,
        autocast: bool | None = None,
        sdpa: bool | None = None,
        compile: bool = False,
        decoder_dtype: str = "float32",
        decoder_threads: int = 0,
        skip_covered_stability: float | None = None,
    ) -> None:
        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be positive")
        if decoder_dtype not in DECODER_DTYPES:
            raise ValueError(f"decoder_dtype must be one of {', '.join(DECODER_DTYPES)}, not {decoder_dtype!r}")
        self.decoder_dtype = DECODER_DTYPES[decoder_dtype]
        screen = decoder_dtype == "bfloat16-screen" and pred_iou_thresh > 0.0
        self.model = model.eval()
        self.device = model.device
        on_cuda = self.device.type == "cuda"
        self.point_grids = build_all_layer_point_grids(
            points_per_side, crop_n_layers, crop_n_points_downscale_factor
        )
        self.points_per_batch = points_per_batch
        self.decoder_batch = self._decoder_batch(points_per_batch, on_cuda)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        # the one precision policy (geoalps.devices): bf16 where it pays (CUDA), float32 on CPU
        self.autocast = autocast_dtype(self.device) is not None if autocast is None else autocast
        self.mask_threshold = self._model_mask_threshold()
        self.encoder = self._make_encoder(
            batch_size=encoder_batch_size or (4 if on_cuda else 1),
            sdpa=on_cuda if sdpa is None else sdpa,
            compile=compile,
        )
        self.decoder = self._make_decoder(self.decoder_dtype)
        self.screen = self._make_decoder(torch.bfloat16) if screen else None
        self.screen_margin = SCREEN_MARGIN
        self.post_single_thread = True  # see _post_threads
        self.decoder_threads = decoder_threads  # see _decode_workers
        if skip_covered_stability is not None and not 0.0 < skip_covered_stability <= 1.0:
            raise ValueError(f"skip_covered_stability must lie in (0, 1], not {skip_covered_stability!r}")
        self.skip_covered_stability = skip_covered_stability

    # -- the model-specific parts (the sam2 engine's generator overrides these) ------------------

    def _model_mask_threshold(self) -> float:
        return float(self.model.mask_threshold)

    def _make_encoder(self, batch_size: int, sdpa: bool, compile: bool):
        """Something with ``encode_all(images)`` yielding (embedding, input size, seconds)."""
        return BatchEncoder(self.model, batch_size=batch_size, autocast=self.autocast, sdpa=sdpa, compile=compile)

    def _make_decoder(self, dtype: torch.dtype):
        """Something with ``set_embedding(embedding)`` and ``decode(points, min_iou)``."""
        return PointPromptDecoder(self.model, dtype=dtype)

    def _decoder_batch(self, points_per_batch: int, on_cuda: bool) -> int:
        return _decoder_batch(self.model.mask_decoder.transformer_dim, points_per_batch, on_cuda)

    def _model_points(self, points: np.ndarray, crop_hw) -> torch.Tensor:
        """Prompts (P, 2) in crop pixels as the decoder takes them: the 1024 px model frame,
        float64 like SamAutomaticMaskGenerator (the prompt encoder normalises before casting);
        MPS has no float64."""
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return torch.as_tensor(self.encoder.transform.apply_coords(points, crop_hw), dtype=dtype, device=self.device)

    def _geometry(self, input_size, crop_hw):
        """(StabilityBound, ExactCells or None) for logits of a crop: how the model's
        post-processing maps 256x256 logits onto the crop's pixels."""
        low_len = self.model.prompt_encoder.mask_input_size[0]
        bound = StabilityBound(input_size, crop_hw, self.model.image_encoder.img_size, low_len, self.device)
        cells = None
        if ExactCells.applies(self.model, input_size, crop_hw):
            cells = ExactCells(crop_hw, low_len, self.device)
        return bound, cells

    def _upsample(self, low: torch.Tensor, crop) -> torch.Tensor:
        """(K, h, w) full-resolution logits of (K, 256, 256) ones, as the model post-processes."""
        return upsample_logits(self.model, low, crop.input_size, crop.hw)

    def _embedding_array(self, embedding) -> np.ndarray:
        """The (C, 64, 64) float32 array features are pooled from."""
        return embedding[0].cpu().numpy().astype(np.float32)

    # -- public -------------------------------------------------------------------------------

    def generate(self, image: np.ndarray, valid: np.ndarray | None = None) -> SamMasks:
        """Masks for one (H, W, 3) uint8 RGB image; prompts on ``valid == False`` are skipped."""
        return self.generate_many([image], None if valid is None else [valid])[0]

    def generate_many(
        self, images: Sequence[np.ndarray], valids: Sequence[np.ndarray | None] | None = None
    ) -> list[SamMasks]:
        """Masks for several images; their crops go through the encoder in shared batches."""
        valids = list(valids) if valids is not None else [None] * len(images)
        if len(valids) != len(images):
            raise ValueError("give one valid mask (or None) per image")
        jobs = self._plan(images, valids)
        timings = [dict(encoder=0.0, decoder=0.0, postprocess=0.0) for _ in images]
        crops = {i: [] for i in range(len(images))}
        full = {}
        with torch.inference_mode():
            embeddings = self.encoder.encode_all([job.pixels(images) for job in jobs])
            for job, (embedding, input_size, seconds) in zip(jobs, embeddings):
                timings[job.image]["encoder"] += seconds
                h, w = images[job.image].shape[:2]
                if job.crop_box == [0, 0, w, h]:
                    full[job.image] = (embedding, input_size)
                if len(job.points):
                    crops[job.image].append(
                        self._process_crop(embedding, input_size, job, (h, w), timings[job.image])
                    )
        results = []
        for i, image in enumerate(images):
            t0 = time.perf_counter()
            result = self._assemble(image.shape[:2], crops[i], *full[i])
            timings[i]["postprocess"] += time.perf_counter() - t0
            result.timings = timings[i]
            results.append(result)
        return results

    # -- which crops and prompts ------------------------------------------------------------------

    def _plan(self, images: Sequence[np.ndarray], valids: list[np.ndarray | None]) -> list[_Job]:
        """Every image's crops with their valid prompts; crops without one are left out, but
        the full image is always encoded (its embedding is the result's)."""
        jobs = []
        for index, (image, valid) in enumerate(zip(images, valids)):
            check_image(image, valid)
            valid = None if valid is None else np.asarray(valid, dtype=bool)
            boxes, layers = generate_crop_boxes(
                image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio
            )
            for crop_box, layer in zip(boxes, layers):
                points = self._crop_points(crop_box, layer, valid)
                if len(points) or crop_box == boxes[0]:
                    jobs.append(_Job(index, crop_box, layer, points))
        return jobs

    def _crop_points(self, crop_box, layer, valid) -> np.ndarray:
        x0, y0, x1, y1 = crop_box
        points = self.point_grids[layer] * np.array([[x1 - x0, y1 - y0]])
        if valid is not None and len(points):
            cols = np.minimum(x0 + np.floor(points[:, 0]).astype(int), valid.shape[1] - 1)
            rows = np.minimum(y0 + np.floor(points[:, 1]).astype(int), valid.shape[0] - 1)
            points = points[valid[rows, cols]]
        return points

    # -- one crop: decoder, filters, NMS --------------------------------------------------------

    def _process_crop(self, embedding, input_size, job: _Job, image_hw, timings) -> _CropMasks | None:
        """SamAutomaticMaskGenerator._process_crop on low-res logits; candidates kept compact."""
        crop = self._crop(input_size, job.crop_box, image_hw)
        self.decoder.set_embedding(embedding)
        if self.screen is not None:
            self.screen.set_embedding(embedding)
        points_1024 = self._model_points(job.points, crop.hw)
        points = torch.as_tensor(job.points, dtype=torch.float32)
        kept = _Candidates()
        workers = self._decode_workers()
        if workers > 1 or self.skip_covered_stability is not None:
            self._decode_and_filter_in_threads(points_1024, points, crop, kept, timings, workers)
        else:
            start = 0
            while start < len(points):  # decoder_batch may shrink on the way (CUDA out of memory)
                stop = start + self.decoder_batch
                self._decode_and_filter(points_1024[start:stop], points[start:stop], crop, kept, timings)
                start = stop
        if not kept.masks:
            return None
        return self._crop_nms(kept, job.crop_box)

    def _crop(self, input_size, crop_box, image_hw) -> _Crop:
        """The crop's filters: stability bound, and exact cells when masks are a plain 4x
        upsampling of the logits (the image's long side is the model input, e.g. 1024 px tiles);
        otherwise every candidate is upsampled as in segment_anything."""
        x0, y0, x1, y1 = crop_box
        crop_hw = (y1 - y0, x1 - x0)
        bound, cells = self._geometry(input_size, crop_hw)
        edge_box = [0, 0, image_hw[1], image_hw[0]]
        return _Crop(crop_box, crop_hw, input_size, edge_box, bound, cells)

    def _decode_workers(self) -> int:
        """Decoder batches decoded at once on CPU: one a torch thread, each single-threaded.

        The decoder's ops are a few MB each; split over threads, every op waits for its slowest
        thread, which on a busy machine (another process on a core) made the decoder many
        times slower than the encoder. Whole batches in parallel only meet once a batch.
        Same results as one batch after another up to float rounding of single- vs
        multi-threaded kernels. GPUs (and ``decoder_threads = 1``) decode batch after batch.
        """
        if self.device.type != "cpu":
            return 1
        return max(1, self.decoder_threads or torch.get_num_threads())

    def _decode_and_filter_in_threads(self, points_1024, points, crop: _Crop, kept: _Candidates,
                                      timings, workers: int) -> None:
        """``_decode_and_filter`` on every batch, ``workers`` batches at once, each decoded and
        filtered in its worker thread (one intra-op thread each); the survivors join ``kept``
        batch by batch in prompt order, so NMS sees them as before.

        The filters used to run in the calling thread beside the workers: one thread more than
        cores, so on a busy machine each op of the decoder or of the filters waited for a time
        slice. The tile's seconds in this step are split between ``timings["decoder"]`` and
        ``["postprocess"]`` in proportion to the workers' seconds in each.

        With ``skip_covered_stability`` (also on one thread or a GPU, then with one worker) the
        prompts of each batch whose point lies in a stable mask of the batches joined so far are
        left out; at most ``SKIP_LAG`` batches are in flight, so batch j sees those up to j - 4.
        """
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        min_iou = self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else None
        step = self.decoder_batch
        skip = self.skip_covered_stability
        coverage = None if skip is None else np.zeros(crop.hw, bool)  # union of stable kept masks

        def batch(index: torch.Tensor):
            part = _Candidates()
            if not len(index):
                return part, 0.0, 0.0
            t0 = time.perf_counter()
            decoded = self._decode(points_1024[index], min_iou)
            t1 = time.perf_counter()
            with self._post_threads():
                self._keep(*decoded, points[index], crop, part)
            return part, t1 - t0, time.perf_counter() - t1

        spent = [0.0, 0.0]  # decoder, filter seconds over all workers

        def join(future) -> None:
            part, decode_s, filter_s = future.result()
            spent[0] += decode_s
            spent[1] += filter_s
            for name in ("boxes", "iou", "stability", "points", "masks"):
                getattr(kept, name).extend(getattr(part, name))
            if coverage is not None:
                _paint_stable(coverage, part, skip)

        skipped = 0
        before = torch.get_num_threads()
        t0 = time.perf_counter()
        try:
            if workers > 1:
                torch.set_num_threads(1)
            threads = (1,) if workers > 1 else (before,)
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=threads) as pool:
                pending = deque()  # at most 2 batches a worker (SKIP_LAG when skipping) ahead of the joined ones
                window = 2 * workers if coverage is None else SKIP_LAG
                for start in range(0, len(points), step):
                    index = torch.arange(start, min(start + step, len(points)))
                    if coverage is not None:
                        covered = _covered(coverage, points[index])
                        skipped += int(covered.sum())
                        index = index[~covered]
                    pending.append(pool.submit(batch, index))
                    if len(pending) >= window:
                        join(pending.popleft())
                while pending:
                    join(pending.popleft())
        finally:
            torch.set_num_threads(before)
        if coverage is not None:
            timings["skipped_prompts"] = timings.get("skipped_prompts", 0) + skipped
        seconds = time.perf_counter() - t0
        decoder_share = spent[0] / sum(spent) if sum(spent) > 0 else 1.0
        timings["decoder"] += seconds * decoder_share
        timings["postprocess"] += seconds * (1.0 - decoder_share)

    def _decode_and_filter(self, points_1024, points, crop: _Crop, kept: _Candidates, timings) -> None:
        """One decoder batch: masks of every prompt, then the filters, survivors into ``kept``."""
        t0 = time.perf_counter()
        min_iou = self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else None
        iou, index, low = self._decode(points_1024, min_iou)
        t1 = time.perf_counter()
        timings["decoder"] += t1 - t0
        with self._post_threads():
            self._keep(iou, index, low, points, crop, kept)
        timings["postprocess"] += time.perf_counter() - t1

    def _keep(self, iou, index, low, points, crop: _Crop, kept: _Candidates) -> None:
        """The filters on one decoded batch (``_decode``'s output), survivors into ``kept``."""
        m = iou.shape[1]
        # Only prompts with a mask that can pass the IoU filter came back with logits.
        low, iou = low.flatten(0, 1), iou[index].flatten(0, 1)
        mask_points = points[index.cpu()].repeat_interleave(m, 0)
        self._filter(low, iou, mask_points, crop, kept)

    def _decode(self, points_1024: torch.Tensor, min_iou: float | None):
        """Decoder on one batch (see ``PointPromptDecoder.decode``), halving it on CUDA OOM."""
        try:
            with bf16_autocast(self.device, self.autocast):
                if self.screen is not None and min_iou is not None:
                    iou, index, low = self._screened_decode(points_1024, min_iou)
                else:
                    iou, index, low = self.decoder.decode(points_1024, min_iou)
            return iou.float(), index, low.float()
        except torch.cuda.OutOfMemoryError:
            if len(points_1024) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(points_1024) // 2
            self.decoder_batch = max(1, half)
            a = self._decode(points_1024[:half], min_iou)
            b = self._decode(points_1024[half:], min_iou)
            return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1] + half]), torch.cat([a[2], b[2]])

    def _screened_decode(self, points_1024: torch.Tensor, min_iou: float):
        """``decoder.decode`` for prompts whose bf16 IoUs come within ``screen_margin`` of
        ``min_iou``; the others keep their bf16 IoUs (none reaches ``min_iou``) and no masks."""
        iou, _, _ = self.screen.decode(points_1024, float("inf"))  # IoUs only, no upscaling
        maybe = (iou > min_iou - self.screen_margin).any(dim=1).nonzero()[:, 0]
        if not len(maybe):
            h, w = self.decoder._hw
            return iou, maybe, iou.new_zeros((0, iou.shape[1], 4 * h, 4 * w))
        exact, index, low = self.decoder.decode(points_1024[maybe], min_iou)
        iou = iou.float().clone()
        iou[maybe] = exact
        return iou, maybe[index], low

    def _filter(self, low, iou, mask_points, crop: _Crop, kept: _Candidates) -> None:
        """segment_anything's filters (IoU, stability, crop edge) on one decoder batch's masks:
        the cheap ones on all masks, then exact stability and boxes a few masks at a time."""
        for sub in self._pass_cheap_filters(low, iou, crop).split(SCORE_CHUNK):
            stability, boxes, masks = self._score_exactly(low[sub], crop)
            good = torch.ones_like(stability, dtype=torch.bool)
            if self.stability_score_thresh > 0.0:
                good &= stability >= self.stability_score_thresh
            good &= ~is_box_near_crop_edge(boxes, crop.box, crop.edge_box)
            if not good.any():
                continue
            sel = sub[good.to(sub.device)]
            kept.boxes.append(boxes[good].cpu())
            kept.iou.append(iou[sel].cpu())
            kept.stability.append(stability[good].cpu())
            kept.points.append(mask_points[sel.cpu()])
            if crop.cells is not None:
                kept.masks.extend(masks[i] for i in good.nonzero()[:, 0].tolist())
            else:
                kept.masks.extend(np.packbits(masks[good].cpu().numpy(), axis=-1))

    def _pass_cheap_filters(self, low, iou, crop: _Crop) -> torch.Tensor:
        """Indexes of the masks whose predicted IoU passes and whose stability bound may."""
        keep = torch.ones_like(iou, dtype=torch.bool)
        if self.pred_iou_thresh > 0.0:
            keep &= iou > self.pred_iou_thresh
        if self.stability_score_thresh > 0.0 and keep.any():
            idx = keep.nonzero()[:, 0]
            upper = crop.bound.upper(low[idx], self.mask_threshold, self.stability_score_offset)
            keep[idx[upper < self.stability_score_thresh]] = False
        return keep.nonzero()[:, 0]

    def _score_exactly(self, low, crop: _Crop):
        """Full-resolution stability (K,), boxes (K, 4) and masks of (K, 256, 256) logits:
        ``CellMask``s from the exact cells, else upsampled (K, h, w) bool masks."""
        threshold, offset = self.mask_threshold, self.stability_score_offset
        if crop.cells is not None:
            counts, boxes, masks = crop.cells(low, [threshold + offset, threshold - offset], threshold)
            # calculate_stability_score's arithmetic: int32 counts, float32 quotient.
            return counts[:, 0].int() / counts[:, 1].int(), boxes, masks
        logits = self._upsample(low, crop)
        stability = calculate_stability_score(logits, threshold, offset)
        return stability, boxes_from_logits(logits, threshold), logits > threshold

    def _crop_nms(self, kept: _Candidates, crop_box) -> _CropMasks:
        """The crop's box NMS (``box_nms_thresh``, by predicted IoU), then to image pixels."""
        boxes, iou = torch.cat(kept.boxes), torch.cat(kept.iou)
        order = batched_nms(
            boxes.float(), iou, torch.zeros(len(boxes)), iou_threshold=self.box_nms_thresh
        )
        offset_xy = torch.tensor([crop_box[0], crop_box[1]])
        return _CropMasks(
            crop_box=list(crop_box),
            boxes=boxes[order] + offset_xy.repeat(2),
            iou=iou[order],
            stability=torch.cat(kept.stability)[order],
            points=torch.cat(kept.points)[order] + offset_xy,
            masks=[kept.masks[i] for i in order.tolist()],
        )

    @contextmanager
    def _post_threads(self):
        """One intra-op thread for the post-processing on CPU (restored afterwards).

        Post-processing is many medium-sized, memory-bound ops; splitting each over threads
        gains little when the machine is idle, and when another process holds a core every op
        waits for its slowest thread: measured 15x slower with 2 threads than with 1 on 2 busy
        cores. ``torch.set_num_threads`` is process-wide: torch work in other Python threads
        runs single-threaded meanwhile (slower, never wrong).
        """
        if self.device.type != "cpu" or not self.post_single_thread:
            yield
            return
        before = torch.get_num_threads()
        if before == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # -- one image: across crops ----------------------------------------------------------------

    def _assemble(self, image_hw, crops: list[_CropMasks | None], embedding, input_size) -> SamMasks:
        """Cross-crop NMS (smaller crops first); survivors become crops of their boxes."""
        emb = self._embedding_array(embedding)
        crops = [c for c in crops if c is not None]
        if not crops:
            return SamMasks.empty(image_hw, emb, tuple(input_size))
        boxes = torch.cat([c.boxes for c in crops])
        crop_boxes = torch.cat([torch.tensor([c.crop_box] * len(c.iou)) for c in crops])
        compact = [(c.crop_box, m) for c in crops for m in c.masks]
        order = self._cross_crop_order(boxes, crop_boxes)
        result = SamMasks(
            crops=[_box_crop(*compact[i], box) for i, box in zip(order.tolist(), boxes[order].tolist())],
            scores=torch.cat([c.iou for c in crops])[order].numpy().astype(np.float32),
            stability=torch.cat([c.stability for c in crops])[order].numpy().astype(np.float32),
            boxes=boxes[order].numpy().astype(np.int64),
            points=torch.cat([c.points for c in crops])[order].numpy().astype(np.float32),
            crop_boxes=crop_boxes[order].numpy().astype(np.int64),
            image_hw=tuple(int(v) for v in image_hw),
            embedding=emb,
            input_size=tuple(int(v) for v in input_size),
        )
        if self.min_mask_region_area > 0:
            result = remove_small_regions(
                result,
                self.min_mask_region_area,
                max(self.box_nms_thresh, self.crop_nms_thresh),
            )
        return result

    def _cross_crop_order(self, boxes: torch.Tensor, crop_boxes: torch.Tensor) -> torch.Tensor:
        """Indexes of the masks kept across crops: NMS preferring masks of smaller crops."""
        if self.crop_n_layers == 0:
            return torch.arange(len(boxes))
        return batched_nms(
            boxes.float(),
            1 / box_area(crop_boxes),
            torch.zeros(len(boxes)),
            iou_threshold=self.crop_nms_thresh,
        )


def _decoder_batch(width: int, points_per_batch: int, on_cuda: bool) -> int:
    """Prompts per decoder call: ``points_per_batch`` on GPU. On CPU the batch's (B, 4096, C)
    image-token maps should stay near cache size: 8 prompts for SAM's 256-d decoder, more for
    narrower (test) decoders, whose ops are small."""
    if on_cuda:
        return points_per_batch
    return min(points_per_batch, min(32, CPU_DECODER_BATCH * max(1, 256 // width)))


def _covered(coverage: np.ndarray, points: torch.Tensor) -> torch.Tensor:
    """(P,) True for the prompts (crop pixels, x y) whose pixel ``coverage`` holds."""
    h, w = coverage.shape
    xy = points.floor().long()
    cols, rows = xy[:, 0].clamp(0, w - 1).numpy(), xy[:, 1].clamp(0, h - 1).numpy()
    return torch.from_numpy(coverage[rows, cols])


def _paint_stable(coverage: np.ndarray, part: _Candidates, min_stability: float) -> None:
    """Adds to ``coverage`` (crop pixels) the masks of ``part`` whose stability reaches
    ``min_stability`` (empty masks' stability is NaN: never)."""
    if not part.masks:
        return
    stability, boxes = torch.cat(part.stability), torch.cat(part.boxes)
    h, w = coverage.shape
    for i in (stability >= min_stability).nonzero()[:, 0].tolist():
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        coverage[y0 : y1 + 1, x0 : x1 + 1] |= _box_crop([0, 0, w, h], part.masks[i], (x0, y0, x1, y1))


def _box_crop(crop_box, mask: CellMask | np.ndarray, box) -> np.ndarray:
    """A kept mask as a bool array of its box (XYXY, inclusive max, image pixels), from its
    compact form: a ``CellMask`` or bit-packed rows of its crop ``crop_box``."""
    x0, y0, x1, y1 = crop_box
    rows = slice(box[1] - y0, box[3] - y0 + 1)
    cols = slice(box[0] - x0, box[2] - x0 + 1)
    if isinstance(mask, CellMask):
        return mask.to_mask((y1 - y0, x1 - x0), (cols.start, rows.start, cols.stop - 1, rows.stop - 1))
    return np.unpackbits(mask[rows], axis=-1, count=x1 - x0).astype(bool)[:, cols].copy()
