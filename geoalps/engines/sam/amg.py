"""Automatic mask generation: geoalps's fast generator and segment_anything's, one result type.

``FastMaskGenerator`` gives the masks segment_anything's ``SamAutomaticMaskGenerator`` gives
(same model, settings, point grid, filters and NMS), for much less work:

- one encoder pass per image (or crop); several images can share one encoder batch;
- prompts decoded in batches by ``PointPromptDecoder`` (layer-0 image work shared by all
  prompts, upscaling as GEMMs one prompt at a time so it stays in cache: about 6x cheaper than
  ``mask_decoder`` on CPU for vit_b), and no upscaling at all for prompts none of whose masks
  can pass ``pred_iou_thresh``;
- predicted-IoU filter and a provable upper bound of the stability score on the 256x256 logits;
  then, for images whose long side is the model input (1024 px tiles), the exact
  full-resolution stability scores, boxes and masks come from the logits' cells
  (``_ExactCells``: only the cells a threshold crosses are interpolated, through
  ``F.interpolate`` itself, so every pixel is bit-identical to segment_anything's) and no mask
  is upsampled at all; other sizes (and crops) upsample each candidate as segment_anything does.
  Crop-edge filter and NMS follow segment_anything's code and order;
- no RLE round trips: candidates are kept per cell (``CellMask``, about 20 kB) or bit-packed
  (128 kB) until NMS has chosen, and only the survivors become full masks;
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

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import (
    get_rel_pos,
    window_partition,
    window_unpartition,
)
from segment_anything.utils.amg import (
    batched_mask_to_box,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
)
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops.boxes import batched_nms, box_area

from geoalps.errors import GeoAlpsError
from geoalps.engines.sam.decoder import PointPromptDecoder

CPU_DECODER_BATCH = 8  # vit_b prompts per CPU decoder call: larger batches fall out of cache
CELL_CHUNK = 16  # masks per _ExactCells call: its (K, 256, 256) temporaries stay in cache
STRIP_CELLS = 32768  # boundary cells per F.interpolate strip (float32 coordinates stay exact)


@dataclass
class SamMasks:
    """The masks of one image and what produced them; every per-mask field has N rows.

    ``boxes`` are XYXY in image pixels with inclusive max (segment_anything's convention);
    ``embedding`` is the full image's encoder output (C, 64, 64) and ``input_size`` the (h, w) of
    the resized image inside the model's 1024 px input, i.e. the embedding cells that hold image
    (``ceil(h / 16)`` rows, ``ceil(w / 16)`` columns).
    """

    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,) float32, predicted IoU
    stability: np.ndarray  # (N,) float32
    boxes: np.ndarray  # (N, 4) int64
    points: np.ndarray  # (N, 2) float32, the prompt (x, y) in image pixels
    crop_boxes: np.ndarray  # (N, 4) int64, XYXY of the crop the mask came from
    embedding: np.ndarray | None  # (C, 64, 64) float32
    input_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    def __len__(self) -> int:
        return len(self.scores)

    def filter(self, keep: np.ndarray) -> "SamMasks":
        """A copy with the masks selected by ``keep`` (bool mask or indexes), all fields at once."""
        keep = np.asarray(keep)
        return SamMasks(
            masks=self.masks[keep],
            scores=self.scores[keep],
            stability=self.stability[keep],
            boxes=self.boxes[keep],
            points=self.points[keep],
            crop_boxes=self.crop_boxes[keep],
            embedding=self.embedding,
            input_size=self.input_size,
            timings=dict(self.timings),
        )

    def mask_embeddings(self) -> np.ndarray:
        """(N, C) mean encoder embedding under each mask (ALPS's mask feature).

        Each mask is area-averaged onto the embedding cells that hold image, and the cells are
        averaged with those coverage weights. Cost: one pass over the N masks.
        """
        if self.embedding is None:
            raise ValueError("no embedding was kept for these masks")
        c = self.embedding.shape[0]
        if len(self) == 0:
            return np.zeros((0, c), np.float32)
        rows = math.ceil(self.input_size[0] / 16)
        cols = math.ceil(self.input_size[1] / 16)
        cells = torch.from_numpy(self.embedding[:, :rows, :cols]).reshape(c, -1)
        out = []
        for start in range(0, len(self), 64):
            m = torch.from_numpy(self.masks[start : start + 64]).float()[:, None]
            cover = F.adaptive_avg_pool2d(m, (rows, cols)).reshape(m.shape[0], -1)
            weight = cover / cover.sum(1, keepdim=True).clamp_min(1e-12)
            out.append(weight @ cells.T)
        return torch.cat(out).numpy().astype(np.float32)


def _empty(image_hw: tuple[int, int], embedding, input_size) -> SamMasks:
    h, w = image_hw
    return SamMasks(
        masks=np.zeros((0, h, w), bool),
        scores=np.zeros(0, np.float32),
        stability=np.zeros(0, np.float32),
        boxes=np.zeros((0, 4), np.int64),
        points=np.zeros((0, 2), np.float32),
        crop_boxes=np.zeros((0, 4), np.int64),
        embedding=embedding,
        input_size=input_size,
    )


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
    ) -> None:
        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be positive")
        self.model = model.eval()
        self.device = model.device
        on_cuda = self.device.type == "cuda"
        self.point_grids = build_all_layer_point_grids(
            points_per_side, crop_n_layers, crop_n_points_downscale_factor
        )
        self.points_per_batch = points_per_batch
        # On CPU the batch's (B, 4096, C) image-token maps should stay near cache size: 8 prompts
        # for SAM's 256-d decoder, more for narrower (test) decoders, whose ops are small.
        width = model.mask_decoder.transformer_dim
        cpu_batch = min(32, CPU_DECODER_BATCH * max(1, 256 // width))
        self.decoder_batch = points_per_batch if on_cuda else min(points_per_batch, cpu_batch)
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.encoder_batch_size = encoder_batch_size or (4 if on_cuda else 1)
        self.autocast = on_cuda if autocast is None else autocast
        self.sdpa = on_cuda if sdpa is None else sdpa
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self.decoder = PointPromptDecoder(model)
        self.post_single_thread = True  # see _post_threads
        self._copy_stream = None  # CUDA stream for host->device uploads, made on first use
        self._encoder = (lambda x: _encoder_forward_sdpa(model.image_encoder, x)) if self.sdpa else model.image_encoder
        if compile:
            self._encoder = torch.compile(self._encoder)

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
        jobs = []  # (image index, crop box, layer, points in crop pixels)
        for index, (image, valid) in enumerate(zip(images, valids)):
            _check_image(image, valid)
            valid = None if valid is None else np.asarray(valid, dtype=bool)
            boxes, layers = generate_crop_boxes(
                image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio
            )
            for crop_box, layer in zip(boxes, layers):
                points = self._crop_points(crop_box, layer, valid)
                if len(points) or crop_box == boxes[0]:  # the full image is always encoded
                    jobs.append((index, crop_box, layer, points))

        timings = [dict(encoder=0.0, decoder=0.0, postprocess=0.0) for _ in images]
        crops = {i: [] for i in range(len(images))}
        full = {}
        chunks = [
            jobs[start : start + self.encoder_batch_size]
            for start in range(0, len(jobs), self.encoder_batch_size)
        ]

        def pixels(chunk):
            return [images[i][y0:y1, x0:x1] for i, (x0, y0, x1, y1), _, _ in chunk]

        # On CUDA the next batch's upload is issued right after this batch's encoder is queued,
        # so its resize and host->device copy overlap the GPU's encoder and decoder work.
        prefetch = self.device.type == "cuda"
        with torch.inference_mode():
            upload = self._upload(pixels(chunks[0])) if prefetch and chunks else None
            for number, chunk in enumerate(chunks):
                t0 = time.perf_counter()
                if not prefetch:
                    upload = self._upload(pixels(chunk))
                embeddings, input_sizes = self._encode_uploaded(upload)
                if prefetch and number + 1 < len(chunks):
                    upload = self._upload(pixels(chunks[number + 1]))
                for i, _, _, _ in chunk:
                    timings[i]["encoder"] += (time.perf_counter() - t0) / len(chunk)
                for (i, crop_box, _, points), emb, input_size in zip(chunk, embeddings, input_sizes):
                    h, w = images[i].shape[:2]
                    if crop_box == [0, 0, w, h]:
                        full[i] = (emb, input_size)
                    if len(points):
                        crops[i].append(
                            self._process_crop(emb, input_size, crop_box, points, (h, w), timings[i])
                        )
        results = []
        for i, image in enumerate(images):
            emb, input_size = full[i]
            t0 = time.perf_counter()
            result = self._assemble(image.shape[:2], crops[i], emb, input_size)
            timings[i]["postprocess"] += time.perf_counter() - t0
            result.timings = timings[i]
            results.append(result)
        return results

    # -- steps --------------------------------------------------------------------------------

    def _crop_points(self, crop_box, layer, valid) -> np.ndarray:
        x0, y0, x1, y1 = crop_box
        points = self.point_grids[layer] * np.array([[x1 - x0, y1 - y0]])
        if valid is not None and len(points):
            cols = np.minimum(x0 + np.floor(points[:, 0]).astype(int), valid.shape[1] - 1)
            rows = np.minimum(y0 + np.floor(points[:, 1]).astype(int), valid.shape[0] - 1)
            points = points[valid[rows, cols]]
        return points

    def _autocast(self):
        if self.autocast:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    def _encode(self, crops: list[np.ndarray]):
        """Encoder embeddings (1, C, 64, 64) float32 for crops, as SamPredictor.set_image does."""
        return self._encode_uploaded(self._upload(crops))

    def _upload(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, list, Any]:
        """Resize crops into one uint8 (B, 3, S, S) batch on the model's device.

        On CUDA the batch is built in pinned memory and copied on a side stream without
        blocking: called for the next encoder batch while the GPU still works on the current
        one, the copy overlaps that work. Returns (batch, resized (h, w)s, copy-done event).
        """
        resized = [self.transform.apply_image(c) for c in crops]
        size = self.model.image_encoder.img_size
        on_cuda = self.device.type == "cuda"
        batch = torch.zeros((len(crops), 3, size, size), dtype=torch.uint8, pin_memory=on_cuda)
        for k, r in enumerate(resized):
            batch[k, :, : r.shape[0], : r.shape[1]] = torch.from_numpy(r).permute(2, 0, 1)
        shapes = [r.shape[:2] for r in resized]
        if not on_cuda:
            return batch.to(self.device), shapes, None
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            # The pinned source stays reserved until the copy is done (PyTorch records the
            # copy's stream on it), so it may go out of scope here.
            on_device = batch.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._copy_stream)
        return on_device, shapes, ready

    def _encode_uploaded(self, upload: tuple[torch.Tensor, list, Any]):
        """Encoder embeddings for a batch from ``_upload`` (waits for its copy on CUDA)."""
        batch, shapes, ready = upload
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            batch.record_stream(current)  # allocated on the copy stream, used on this one
        # Normalise each image before padding, as Sam.preprocess does (padding stays 0).
        x = torch.zeros(batch.shape, dtype=torch.float32, device=self.device)
        for k, (h, w) in enumerate(shapes):
            x[k, :, :h, :w] = (batch[k, :, :h, :w] - self.model.pixel_mean) / self.model.pixel_std
        with self._autocast():
            features = self._encoder(x)
        features = features.float()
        return [features[k : k + 1] for k in range(len(shapes))], shapes

    def _decode(self, points_1024: torch.Tensor, min_iou: float | None):
        """Decoder on one batch (see ``PointPromptDecoder.decode``), halving it on CUDA OOM."""
        try:
            with self._autocast():
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

    def _process_crop(self, embedding, input_size, crop_box, points, orig_hw, timings) -> dict:
        """SamAutomaticMaskGenerator._process_crop on low-res logits; candidates kept compact.

        When the crop's masks are a plain 4x upsampling of the logits (the image's long side is
        the model input, e.g. 1024 px tiles), stability, boxes and masks come exactly from the
        low-resolution cells (``_ExactCells``); otherwise every candidate is upsampled as in
        segment_anything and kept bit-packed.
        """
        x0, y0, x1, y1 = crop_box
        crop_hw = (y1 - y0, x1 - x0)
        self.decoder.set_embedding(embedding)
        low_len = self.model.prompt_encoder.mask_input_size[0]
        bound = _StabilityBound(
            input_size, crop_hw, self.model.image_encoder.img_size, low_len, self.device
        )
        cells = None
        if _ExactCells.applies(self.model, input_size, crop_hw):
            cells = _ExactCells(crop_hw, low_len, self.device)
        # float64 like SamAutomaticMaskGenerator (the prompt encoder normalises before casting);
        # MPS has no float64.
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        points_1024 = torch.as_tensor(
            self.transform.apply_coords(points, crop_hw), dtype=dtype, device=self.device
        )
        points = torch.as_tensor(points, dtype=torch.float32)
        kept = {"boxes": [], "iou": [], "stability": [], "points": [], "masks": []}
        crop = dict(
            bound=bound, cells=cells, input_size=input_size, crop_hw=crop_hw, crop_box=crop_box,
            edge_box=[0, 0, orig_hw[1], orig_hw[0]],
        )
        for start in range(0, len(points), self.decoder_batch):
            t0 = time.perf_counter()
            min_iou = self.pred_iou_thresh if self.pred_iou_thresh > 0.0 else None
            iou, index, low = self._decode(points_1024[start : start + self.decoder_batch], min_iou)
            t1 = time.perf_counter()
            timings["decoder"] += t1 - t0
            m = iou.shape[1]
            # Only prompts with a mask that can pass the IoU filter came back with logits.
            low, iou = low.flatten(0, 1), iou[index].flatten(0, 1)
            batch_points = points[start : start + self.decoder_batch][index.cpu()]
            batch_points = batch_points.repeat_interleave(m, 0)
            with self._post_threads():
                self._filter_batch(low, iou, batch_points, crop, kept)
            timings["postprocess"] += time.perf_counter() - t1
        if not kept["masks"]:
            return {}
        data = {k: torch.cat(v) for k, v in kept.items() if k != "masks"}
        order = batched_nms(
            data["boxes"].float(),
            data["iou"],
            torch.zeros(len(data["boxes"])),
            iou_threshold=self.box_nms_thresh,
        )
        offset_xy = torch.tensor([x0, y0])
        return {
            "boxes": data["boxes"][order] + offset_xy.repeat(2),
            "iou": data["iou"][order],
            "stability": data["stability"][order],
            "points": data["points"][order] + offset_xy,
            "masks": [kept["masks"][i] for i in order.tolist()],
            "crop_box": list(crop_box),
        }

    def _filter_batch(self, low, iou, batch_points, crop: dict, kept: dict) -> None:
        """segment_anything's filters (IoU, stability, crop edge) on one decoder batch's masks;
        survivors' boxes, scores and masks (``CellMask`` or bit-packed rows) go into ``kept``."""
        threshold = self.model.mask_threshold
        offset = self.stability_score_offset
        cells = crop["cells"]
        keep = torch.ones_like(iou, dtype=torch.bool)
        if self.pred_iou_thresh > 0.0:
            keep &= iou > self.pred_iou_thresh
        if self.stability_score_thresh > 0.0 and keep.any():
            idx = keep.nonzero()[:, 0]
            upper = crop["bound"].upper(low[idx], threshold, offset)
            keep[idx[upper < self.stability_score_thresh]] = False
        idx = keep.nonzero()[:, 0]
        chunk = CELL_CHUNK if cells is not None else 16
        for sub in idx.split(chunk):  # exact full-resolution checks, a few masks at a time
            if cells is not None:
                counts, boxes, masks = cells(low[sub], [threshold + offset, threshold - offset], threshold)
                # calculate_stability_score's arithmetic: int32 counts, float32 quotient.
                stability = counts[:, 0].int() / counts[:, 1].int()
            else:
                logits = upsample_logits(self.model, low[sub], crop["input_size"], crop["crop_hw"])
                stability = calculate_stability_score(logits, threshold, offset)
                boxes = boxes_from_logits(logits, threshold)
                masks = logits > threshold
                del logits
            good = torch.ones_like(stability, dtype=torch.bool)
            if self.stability_score_thresh > 0.0:
                good &= stability >= self.stability_score_thresh
            good &= ~is_box_near_crop_edge(boxes, crop["crop_box"], crop["edge_box"])
            if not good.any():
                continue
            sel = sub[good.to(sub.device)]
            kept["boxes"].append(boxes[good].cpu())
            kept["iou"].append(iou[sel].cpu())
            kept["stability"].append(stability[good].cpu())
            kept["points"].append(batch_points[sel.cpu()])
            if cells is not None:
                kept["masks"].extend(masks[i] for i in good.nonzero()[:, 0].tolist())
            else:
                kept["masks"].extend(np.packbits(masks[good].cpu().numpy(), axis=-1))

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

    def _assemble(self, image_hw, crops: list[dict], embedding, input_size) -> SamMasks:
        """Cross-crop NMS (smaller crops first), unpack survivors into image-sized masks."""
        emb = embedding[0].cpu().numpy().astype(np.float32)
        crops = [c for c in crops if c]
        if not crops:
            return _empty(image_hw, emb, tuple(input_size))
        boxes = torch.cat([c["boxes"] for c in crops])
        iou = torch.cat([c["iou"] for c in crops])
        stability = torch.cat([c["stability"] for c in crops])
        points = torch.cat([c["points"] for c in crops])
        crop_boxes = torch.cat([torch.tensor([c["crop_box"]] * len(c["iou"])) for c in crops])
        packed = [(c["crop_box"], p) for c in crops for p in c["masks"]]
        if self.crop_n_layers > 0:
            order = batched_nms(
                boxes.float(),
                1 / box_area(crop_boxes),
                torch.zeros(len(boxes)),
                iou_threshold=self.crop_nms_thresh,
            )
        else:
            order = torch.arange(len(boxes))
        h, w = image_hw
        masks = np.zeros((len(order), h, w), bool)
        for row, i in enumerate(order.tolist()):
            (x0, y0, x1, y1), mask = packed[i]
            if isinstance(mask, CellMask):
                masks[row, y0:y1, x0:x1] = mask.to_mask((y1 - y0, x1 - x0))
            else:  # bit-packed rows
                masks[row, y0:y1, x0:x1] = np.unpackbits(mask, axis=-1, count=x1 - x0).astype(bool)
        result = SamMasks(
            masks=masks,
            scores=iou[order].numpy().astype(np.float32),
            stability=stability[order].numpy().astype(np.float32),
            boxes=boxes[order].numpy().astype(np.int64),
            points=points[order].numpy().astype(np.float32),
            crop_boxes=crop_boxes[order].numpy().astype(np.int64),
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
    return _boxes_from_hits(logits.amax(dim=-1) > threshold, logits.amax(dim=-2) > threshold)


def _check_image(image: np.ndarray, valid: np.ndarray | None) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {getattr(image, 'shape', None)}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if valid is not None and np.shape(valid) != image.shape[:2]:
        raise ValueError(f"valid must be an array of shape {image.shape[:2]}, got {np.shape(valid)}")


class _StabilityBound:
    """Upper bound of the full-resolution stability score, computed on 256x256 logits.

    ``Sam.postprocess_masks`` upsamples bilinearly (to 1024, crop, to the image size), so every
    output pixel is a convex combination of a few neighbouring low-resolution logits: it exceeds
    a threshold only if their maximum does, and surely exceeds it if their minimum does. Each
    output row (column) is charged to the first low-resolution row (column) of its support, and a
    sliding max/min over the longest support covers every support. Counting output pixels that
    way bounds the intersection from above and the union from below. Cost per mask: two small
    pooling passes on the 256x256 logits instead of a 1024x1024 upsampling.
    """

    def __init__(self, input_size, orig_size, padded: int, low_len: int, device) -> None:
        self.row_weight, self.row_window = self._axis(low_len, padded, input_size[0], orig_size[0])
        self.col_weight, self.col_window = self._axis(low_len, padded, input_size[1], orig_size[1])
        self.row_weight = self.row_weight.to(device)
        self.col_weight = self.col_weight.to(device)

    @staticmethod
    def _axis(low_len: int, padded: int, input_len: int, out_len: int):
        def support(n_in: int, n_out: int):
            src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
            first = np.floor(src).astype(np.int64)
            return first, np.minimum(first + 1, n_in - 1)

        lo1, hi1 = support(low_len, padded)
        lo1, hi1 = lo1[:input_len], hi1[:input_len]
        if out_len == input_len:
            lo, hi = lo1, hi1  # same size: bilinear is the identity
        else:
            p0, p1 = support(input_len, out_len)
            p0 = np.maximum(p0 - 1, 0)  # one extra pixel each side: float rounding of indexes
            p1 = np.minimum(p1 + 1, input_len - 1)
            lo, hi = lo1[p0], hi1[p1]
        weight = np.bincount(lo, minlength=low_len).astype(np.float64)
        return torch.from_numpy(weight), int((hi - lo).max()) + 1

    def _pool(self, low: torch.Tensor, op) -> torch.Tensor:
        """Sliding max (or min) over the windows that start at each logit, rows then columns."""
        out = low.clone()
        for k in range(1, self.row_window):
            out[:, :-k] = op(out[:, :-k], low[:, k:])
        pooled = out.clone()
        for k in range(1, self.col_window):
            pooled[:, :, :-k] = op(pooled[:, :, :-k], out[:, :, k:])
        return pooled

    def _count(self, hits: torch.Tensor) -> torch.Tensor:
        return (hits.double() @ self.col_weight) @ self.row_weight

    def upper(self, low: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
        """(K,) upper bounds of ``calculate_stability_score`` for (K, 256, 256) logits."""
        tol = 1e-4  # float rounding of the interpolation, in logit units
        hi = self._pool(low, torch.maximum)
        inter = self._count(hi + tol * (1 + hi.abs()) > threshold + offset)
        lo = self._pool(low, torch.minimum)
        union = self._count(lo - tol * (1 + lo.abs()) > threshold - offset)
        bound = torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, math.inf))
        return bound.float()


# -- exact statistics of 4x-upsampled logits from the low-resolution cells ------------------


@dataclass
class CellMask:
    """One mask of a 4x bilinear upsampling, stored per low-resolution cell (about 20 kB).

    ``whole``: bit-packed (n-1, n-1) cells whose 4x4 output pixels all pass the threshold;
    ``cells``/``hits``: the boundary cells (row, column) and their exact 4x4 pixels (16 bits);
    ``top``/``bottom``/``left``/``right``: the exact 2-pixel image borders outside the cells.
    """

    whole: np.ndarray
    cells: np.ndarray
    hits: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray

    def to_mask(self, out_hw: tuple[int, int]) -> np.ndarray:
        """The (H, W) bool mask, equal to ``upsampled logits > threshold`` pixel for pixel."""
        n = self.whole.shape[0]
        size = 4 * (n + 1)
        mask = np.zeros((size, size), bool)
        whole = np.unpackbits(self.whole, axis=1, count=n).astype(bool)
        inner = np.repeat(np.repeat(whole, 4, axis=0), 4, axis=1).reshape(n, 4, n, 4)
        if len(self.cells):
            bits = np.unpackbits(self.hits, axis=1, count=16).astype(bool).reshape(-1, 4, 4)
            inner[self.cells[:, 0], :, self.cells[:, 1], :] = bits
        mask[2 : size - 2, 2 : size - 2] = inner.reshape(size - 4, size - 4)
        mask[: self.top.shape[0], : self.top.shape[1]] = self.top
        mask[size - 2 : size - 2 + self.bottom.shape[0], : self.bottom.shape[1]] = self.bottom
        mask[2 : 2 + self.left.shape[0], : self.left.shape[1]] = self.left
        mask[2 : 2 + self.right.shape[0], size - 2 : size - 2 + self.right.shape[1]] = self.right
        return mask[: out_hw[0], : out_hw[1]]


class _ExactCells:
    """Exact counts, boxes and masks of ``Sam.postprocess_masks`` output, from 256x256 logits.

    Applies when ``postprocess_masks`` is a 4x bilinear upsampling (align_corners=False), cropped:
    the image's long side equals the model input (1024 px tiles, any aspect). Output pixels
    2..4n-3 fall in cells of 4x4 pixels, each cell interpolating its 2x2 low-resolution corners,
    so a cell whose corners all lie on one side of every threshold (with a rounding margin) is
    counted whole, and only cells a threshold crosses ("boundary" cells, a few percent) are
    evaluated pixel by pixel; the 2-pixel image borders are evaluated exactly too.

    Exact evaluation goes through ``F.interpolate`` itself, so values are bit-identical to
    segment_anything's: the boundary cells' 2x2 corners are laid side by side in one 2-row strip
    and upsampled 4x (same scale, same weights, same generic kernel: the output is kept wider
    than the 128 px under which PyTorch switches to its channels-last kernel, whose rounding
    differs); the inner 4x4 pixels of each 8x8 block are the cell's exact pixels.

    Cost per mask: a few passes over the 256x256 logits, plus about 64 interpolated values per
    boundary cell: under 1 ms on one CPU core, against 5-10 ms for upsampling to 1024x1024 and
    thresholding.
    """

    def __init__(self, out_hw: tuple[int, int], low_len: int, device) -> None:
        self.h, self.w = (int(v) for v in out_hw)
        self.n = low_len - 1  # cells per side
        self.size = 4 * low_len
        starts = 4 * torch.arange(self.n, device=device) + 2  # first output pixel of each cell
        self.row_n = (self.h - starts).clamp(0, 4)  # output rows of each cell row inside the image
        self.col_n = (self.w - starts).clamp(0, 4)
        weight = self.row_n[:, None] * self.col_n[None, :]
        self.full = weight == 16
        self.partial = (weight > 0) & ~self.full  # cut by the image edge: always evaluated
        self.all_full = bool(self.full.all())
        self.full_u8 = self.full.to(torch.uint8)
        self.four = torch.arange(4, device=device)
        self.row_dtype = torch.uint8 if self.n <= 255 else torch.int32
        self.corner = torch.tensor([0, 1, low_len, low_len + 1], device=device)

    @staticmethod
    def applies(model: Sam, input_size, orig_size) -> bool:
        """True when postprocess_masks is a 4x upsampling cropped to the image (no 2nd resize)."""
        low_len = model.prompt_encoder.mask_input_size[0]
        return (
            tuple(int(v) for v in input_size) == tuple(int(v) for v in orig_size)
            and model.image_encoder.img_size == 4 * low_len
            and tuple(model.prompt_encoder.mask_input_size) == (low_len, low_len)
        )

    def __call__(
        self, low: torch.Tensor, thresholds: Sequence[float], mask_threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor, list[CellMask]]:
        """For (K, n+1, n+1) logits: counts of pixels above each threshold (K, T) int64, boxes
        (K, 4) of pixels above ``mask_threshold`` (``batched_mask_to_box`` convention), and each
        mask's ``CellMask`` at ``mask_threshold``."""
        K, dev = low.shape[0], low.device
        taus = sorted(set(float(t) for t in thresholds) | {float(mask_threshold)})
        # Interpolated values are convex combinations computed in float32: within a few ulps
        # of the corners' range. The margin only widens the set of exactly evaluated cells.
        if K == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=dev)
            return empty.view(0, len(thresholds)), empty.view(0, 4), []
        low_min, low_max = torch.aminmax(low)
        tol = 1e-5 * (1.0 + max(-float(low_min), float(low_max)))
        lo = hi = None  # per logit: how many thresholds it surely exceeds / may exceed
        for t in taus:
            a = (low > t + tol).view(torch.uint8)
            b = (low > t - tol).view(torch.uint8)
            lo = a if lo is None else lo.add_(a)
            hi = b if hi is None else hi.add_(b)
        lo = torch.minimum(lo[:, :-1], lo[:, 1:])
        lo = torch.minimum(lo[..., :-1], lo[..., 1:])  # (K, n, n): min over the 4 corners
        hi = torch.maximum(hi[:, :-1], hi[:, 1:])
        hi = torch.maximum(hi[..., :-1], hi[..., 1:])
        boundary = lo != hi
        if not self.all_full:
            boundary &= self.full
            boundary |= self.partial
            lo *= self.full_u8
        lo *= (~boundary).view(torch.uint8)  # level of the cells counted whole, else 0
        k, r, c = boundary.nonzero().unbind(1)
        vals = self._cell_values(low, k, r, c)  # (4, B, 4): row in cell, cell, column in cell
        ok = None
        if not self.all_full:
            ok = (self.four[:, None] < self.row_n[r]).unsqueeze(2) & (
                self.four[:, None] < self.col_n[c]
            ).unsqueeze(0).permute(0, 2, 1)
        strips = self._strips(low)
        # Cells whose level exceeds rank: min(level, rank + 1) - min(level, rank), 0 or 1.
        clipped = [lo.clamp_max(rank) for rank in range(len(taus) + 1)]
        above = [(clipped[rank + 1] - clipped[rank]) for rank in range(len(taus))]
        counts = torch.zeros(K, len(thresholds), dtype=torch.int64, device=dev)
        for j, t in enumerate(thresholds):
            rank = taus.index(float(t))
            # Row sums fit in uint8 (at most 255 cells); summing uint8 avoids a widening copy.
            n = above[rank].sum(2, dtype=self.row_dtype).sum(1) * 16
            hits = vals > t
            if ok is not None:
                hits &= ok
            n.index_add_(0, k, hits.sum((0, 2)))
            for s in strips:
                n += (s > t).flatten(1).sum(1)
            counts[:, j] = n
        rank = taus.index(float(mask_threshold))
        whole = above[rank]  # uint8 0/1
        hits = vals > mask_threshold
        if ok is not None:
            hits &= ok
        edges = [s > mask_threshold for s in strips]
        boxes = self._boxes(whole, k, r, c, hits, edges)
        return counts, boxes, self._cell_masks(whole, k, r, c, hits, edges)

    def _cell_values(self, low, k, r, c) -> torch.Tensor:
        """Exact output pixels (4, B, 4) of the B cells (k, r, c), via F.interpolate on strips.

        At most ``STRIP_CELLS`` cells a strip: the kernel computes source coordinates in float32,
        exact only while output columns stay well below 2**23.
        """
        start = (k * low.shape[1] + r) * low.shape[2] + c
        corners = low.reshape(-1)[start[:, None] + self.corner]  # (B, 4): (r,c) (r,c+1) (r+1,c) ...
        out = []
        for part in corners.split(STRIP_CELLS):
            b = len(part)
            m = max(b, 16)  # 8 + 8m > 128: PyTorch's generic kernel, as for 1024 px masks
            strip = low.new_zeros(2, m, 2)
            strip[:, :b] = part.view(b, 2, 2).transpose(0, 1)
            up = F.interpolate(
                strip.view(1, 1, 2, 2 * m), (8, 8 * m), mode="bilinear", align_corners=False
            )
            out.append(up.view(8, m, 8)[2:6, :b, 2:6])
        return out[0] if len(out) == 1 else torch.cat(out, 1)

    def _strips(self, low) -> list[torch.Tensor]:
        """Exact output rows 0-1 and size-2.. and columns 0-1 and size-2.., cropped to the image."""
        h, w, size = self.h, self.w, self.size

        def up(x, out):
            return F.interpolate(x[:, None], out, mode="bilinear", align_corners=False)[:, 0]

        top = up(low[:, :2, :], (8, size))[:, : min(2, h), :w]
        bottom = up(low[:, -2:, :], (8, size))[:, 6 : 6 + max(0, h - (size - 2)), :w]
        mid = slice(2, max(2, min(h, size - 2)))
        left = up(low[:, :, :2], (size, 8))[:, mid, : min(2, w)]
        right = up(low[:, :, -2:], (size, 8))[:, mid, 6 : 6 + max(0, w - (size - 2))]
        return [top, bottom, left, right]

    def _boxes(self, whole, k, r, c, hits, edges) -> torch.Tensor:
        K, dev = whole.shape[0], whole.device
        rows = torch.zeros(K, self.size, dtype=torch.bool, device=dev)
        cols = torch.zeros(K, self.size, dtype=torch.bool, device=dev)
        rows[:, 2 : self.size - 2] = whole.amax(2).bool().repeat_interleave(4, 1)
        cols[:, 2 : self.size - 2] = whole.amax(1).bool().repeat_interleave(4, 1)
        i, b = hits.any(2).nonzero().unbind(1)  # row i of boundary cell b has a pixel
        rows.view(-1).index_fill_(0, k[b] * self.size + 4 * r[b] + 2 + i, True)
        b, j = hits.any(0).nonzero().unbind(1)
        cols.view(-1).index_fill_(0, k[b] * self.size + 4 * c[b] + 2 + j, True)
        top, bottom, left, right = edges
        rows[:, : top.shape[1]] |= top.any(2)
        cols[:, : top.shape[2]] |= top.any(1)
        rows[:, self.size - 2 : self.size - 2 + bottom.shape[1]] |= bottom.any(2)
        cols[:, : bottom.shape[2]] |= bottom.any(1)
        rows[:, 2 : 2 + left.shape[1]] |= left.any(2)
        cols[:, : left.shape[2]] |= left.any(1)
        rows[:, 2 : 2 + right.shape[1]] |= right.any(2)
        cols[:, self.size - 2 : self.size - 2 + right.shape[2]] |= right.any(1)
        return _boxes_from_hits(rows[:, : self.h], cols[:, : self.w])

    def _cell_masks(self, whole, k, r, c, hits, edges) -> list[CellMask]:
        K = whole.shape[0]
        whole = np.packbits(whole.cpu().numpy().view(bool), axis=-1)
        per_mask = torch.bincount(k, minlength=K).tolist() if len(k) else [0] * K
        cells = torch.stack([r, c], 1).to(torch.int16).cpu().numpy()
        bits = np.packbits(hits.permute(1, 0, 2).reshape(-1, 16).cpu().numpy(), axis=-1)
        edges = [e.cpu().numpy() for e in edges]
        out, start = [], 0
        for i, count in enumerate(per_mask):
            stop = start + count
            out.append(
                CellMask(whole[i], cells[start:stop], bits[start:stop], *(e[i] for e in edges))
            )
            start = stop
        return out


def _boxes_from_hits(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
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
    connected-component labellings per mask.
    """
    from scipy import ndimage

    if len(result) == 0:
        return result
    structure = np.ones((3, 3), bool)  # 8-connectivity, as cv2.connectedComponentsWithStats(8)

    def clean(mask: np.ndarray, fill_holes: bool) -> tuple[np.ndarray, bool]:
        working = ~mask if fill_holes else mask
        labels, n = ndimage.label(working, structure=structure)
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

    masks = result.masks.copy()
    scores = np.zeros(len(result), np.float32)
    for i in range(len(result)):
        mask, changed_holes = clean(masks[i], True)
        mask, changed_islands = clean(mask, False)
        masks[i] = mask
        scores[i] = float(not (changed_holes or changed_islands))
    boxes = batched_mask_to_box(torch.from_numpy(masks))
    keep = batched_nms(
        boxes.float(), torch.from_numpy(scores), torch.zeros(len(boxes)), iou_threshold=nms_thresh
    ).numpy()
    out = result.filter(keep)
    out.masks = masks[keep]
    out.boxes = boxes.numpy()[keep].astype(np.int64)
    return out


# -- encoder with scaled-dot-product attention (GPU) -----------------------------------------


def _encoder_forward_sdpa(encoder, x: torch.Tensor) -> torch.Tensor:
    """ImageEncoderViT.forward with each block's attention through SDPA (same math)."""
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for blk in encoder.blocks:
        shortcut = x
        x = blk.norm1(x)
        if blk.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, blk.window_size)
        x = _sdpa_attention(blk.attn, x)
        if blk.window_size > 0:
            x = window_unpartition(x, blk.window_size, pad_hw, (h, w))
        x = shortcut + x
        x = x + blk.mlp(blk.norm2(x))
    return encoder.neck(x.permute(0, 3, 1, 2))


def _sdpa_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """image_encoder.Attention.forward, the decomposed relative positions as an additive mask."""
    b, h, w, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, d)
    mask = None
    if attn.use_rel_pos:
        d = q.shape[-1]
        rh = get_rel_pos(h, h, attn.rel_pos_h).to(q.dtype)
        rw = get_rel_pos(w, w, attn.rel_pos_w).to(q.dtype)
        r_q = q.reshape(b * heads, h, w, d)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
        mask = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(b, heads, h * w, h * w)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
    out = out.reshape(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(out)


# -- segment_anything's own generator, same result type ---------------------------------------


def reference_generate(model: Sam, image: np.ndarray, **settings: Any) -> SamMasks:
    """segment_anything's ``SamAutomaticMaskGenerator`` (binary masks) as a ``SamMasks``.

    ``settings`` are the generator's keyword arguments (points_per_side, points_per_batch,
    pred_iou_thresh, ...). The full-image embedding is kept from the generator's own first
    encoder pass (the full image is always its first crop), so no extra encoder run is needed.
    ``min_mask_region_area`` runs segment_anything's OpenCV post-processing when OpenCV is
    installed, else the scipy port ``remove_small_regions``. Cost: segment_anything's, see
    ../shared/INSTALL.md (about 57 s for 16x16 points on 512 px with vit_b on 2 CPU cores).
    """
    _check_image(image, None)
    min_area = settings.pop("min_mask_region_area", 0)
    try:
        import cv2  # noqa: F401

        has_cv2 = True
    except ImportError:
        has_cv2 = False
    generator = SamAutomaticMaskGenerator(
        model,
        output_mode="binary_mask",
        min_mask_region_area=min_area if has_cv2 else 0,
        **settings,
    )
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
        features, input_size = captured[0]
    else:  # a segment_anything that no longer resets after each crop
        with torch.inference_mode():
            predictor.set_image(image)
            features, input_size = predictor.features, tuple(predictor.input_size)
    embedding = features[0].float().cpu().numpy()

    h, w = image.shape[:2]
    if not anns:
        return _empty((h, w), embedding, input_size)

    def xyxy(xywh) -> list[int]:
        x, y, bw, bh = (int(round(v)) for v in xywh)
        return [x, y, x + bw, y + bh]

    result = SamMasks(
        masks=np.stack([a["segmentation"] for a in anns]).astype(bool),
        scores=np.array([a["predicted_iou"] for a in anns], np.float32),
        stability=np.array([a["stability_score"] for a in anns], np.float32),
        boxes=np.array([xyxy(a["bbox"]) for a in anns], np.int64),
        points=np.array([a["point_coords"][0] for a in anns], np.float32),
        crop_boxes=np.array([xyxy(a["crop_box"]) for a in anns], np.int64),
        embedding=embedding,
        input_size=tuple(int(v) for v in input_size),
    )
    if min_area > 0 and not has_cv2:
        nms = max(generator.box_nms_thresh, generator.crop_nms_thresh)
        result = remove_small_regions(result, min_area, nms)
    return result
