"""``BatchEncoder``: SAM's image encoder on batches of images, as ``SamPredictor.set_image`` runs it.

Each image (a tile, or a crop of one) is resized to the model's 1024 px long side, normalised,
zero-padded to a square and encoded; several share one encoder call, which is how a GPU gets
busy (``--tile-batch``). On CUDA the next batch's resize and host->device copy run while the
GPU still encodes and decodes the current one. The encoder pass is the largest single cost
of the SAM engine: 13-30 s per 1024 px image for vit_b on 2 CPU cores, well under a second
on a GPU; a batch holds about 1.5 GiB of GPU memory per vit_b image under bf16 autocast.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from geoalps.engines.sam.sdpa_encoder import encoder_forward_chunked, encoder_forward_sdpa


class BatchEncoder:
    """Encoder embeddings (1, C, 64, 64) float32 of images, ``batch_size`` per encoder call.

    Args:
        model: a segment_anything ``Sam``.
        batch_size: images per encoder call.
        autocast: run the encoder under bf16 autocast.
        sdpa: attention through ``scaled_dot_product_attention`` (``sdpa_encoder``); without
            it, global attention on CPU runs in query chunks (``encoder_forward_chunked``).
        compile: wrap the encoder in ``torch.compile`` (slow first call; for long GPU runs).
    """

    def __init__(self, model: Sam, batch_size: int, autocast: bool, sdpa: bool, compile: bool) -> None:
        self.model = model
        self.device = model.device
        self.batch_size = batch_size
        self.autocast = autocast
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self._copy_stream = None  # CUDA stream for host->device uploads, made on first use
        if sdpa:
            self._forward = lambda x: encoder_forward_sdpa(model.image_encoder, x)
        elif self.device.type == "cpu":  # a fraction of the memory, same masks (sdpa_encoder)
            self._forward = lambda x: encoder_forward_chunked(model.image_encoder, x)
        else:
            self._forward = model.image_encoder
        if compile:
            self._forward = torch.compile(self._forward)

    def encode_all(self, images: Sequence[np.ndarray]) -> Iterator[tuple[torch.Tensor, tuple[int, int], float]]:
        """(embedding, input size, encoder seconds) for each (H, W, 3) uint8 image, in order.

        ``input size`` is the (h, w) of the resized image inside the model input. A batch is
        encoded when its first embedding is asked for; on CUDA the next batch's upload is issued
        right after this batch's encoder is queued, so it overlaps the GPU's work on this one.
        """
        batches = [images[start : start + self.batch_size] for start in range(0, len(images), self.batch_size)]
        prefetch = self.device.type == "cuda"
        upload = self.upload(batches[0]) if prefetch and batches else None
        for number, batch in enumerate(batches):
            t0 = time.perf_counter()
            if not prefetch:
                upload = self.upload(batch)
            embeddings, input_sizes = self.encode_uploaded(upload)
            if prefetch and number + 1 < len(batches):
                upload = self.upload(batches[number + 1])
            seconds = (time.perf_counter() - t0) / len(batch)
            for embedding, input_size in zip(embeddings, input_sizes):
                yield embedding, input_size, seconds

    def upload(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list, Any]:
        """Resize images into one uint8 (B, 3, S, S) batch on the model's device.

        On CUDA the batch is built in pinned memory and copied on a side stream without
        blocking: called for the next encoder batch while the GPU still works on the current
        one, the copy overlaps that work. Returns (batch, resized (h, w)s, copy-done event).
        """
        resized = [self.transform.apply_image(image) for image in images]
        size = self.model.image_encoder.img_size
        on_cuda = self.device.type == "cuda"
        batch = torch.zeros((len(images), 3, size, size), dtype=torch.uint8, pin_memory=on_cuda)
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

    def encode_uploaded(self, upload: tuple[torch.Tensor, list, Any]) -> tuple[list[torch.Tensor], list]:
        """Embeddings and input sizes for a batch from ``upload`` (waits for its copy on CUDA)."""
        batch, shapes, ready = upload
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            batch.record_stream(current)  # allocated on the copy stream, used on this one
        # Normalise each image before padding, as Sam.preprocess does (padding stays 0).
        x = torch.zeros(batch.shape, dtype=torch.float32, device=self.device)
        for k, (h, w) in enumerate(shapes):
            x[k, :, :h, :w] = (batch[k, :, :h, :w] - self.model.pixel_mean) / self.model.pixel_std
        with bf16_autocast(self.device, self.autocast):
            features = self._forward(x)
        features = features.float()
        return [features[k : k + 1] for k in range(len(shapes))], shapes


def bf16_autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled``, else autocast explicitly off (through
    :func:`geoalps.devices.autocast`, the one precision policy)."""
    from geoalps.devices import autocast, autocast_dtype

    return autocast(device, autocast_dtype(device, "bf16" if enabled else "32"))
