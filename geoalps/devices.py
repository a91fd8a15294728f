"""Which torch device a run uses, and in which precision: the one resolver behind every
``--device`` option and the one precision policy (:func:`autocast_dtype`, entered with
:func:`autocast`) of training, prediction and the SAM engines.

torch is imported only when a device is resolved (the SAM engine, training, predict), never by
the classical engine or ``geoalps --help``.
"""
from __future__ import annotations

from geoalps.errors import OptionError

# Which local dask worker this process is (0..N-1), set once when the worker starts
# (:class:`geoalps.labelling.dask_worker.OneGpuPerWorker`); None in every other process.
_worker_slot: int | None = None


def set_worker_slot(slot: int | None) -> None:
    """Mark this process as local worker ``slot``: from now on ``cuda`` (and ``auto`` when it
    resolves to CUDA) means this worker's own GPU (:func:`worker_cuda_index`). None: unmark."""
    global _worker_slot
    _worker_slot = slot


def worker_cuda_index(slot: int | None, device_count: int) -> int | None:
    """The GPU that local worker ``slot`` uses among ``device_count`` visible ones: ``slot mod
    device_count``, so N workers spread over the GPUs in turn. None (torch's current device, as
    without workers) when this is no worker or there is at most one GPU to choose from."""
    if slot is None or device_count <= 1:
        return None
    return slot % device_count


def _unindexed_cuda(torch):
    """``cuda`` without an index: this worker's GPU in a local dask worker on a multi-GPU machine
    (also made torch's current device, so calls without a device, such as ``empty_cache``, and
    CUDA's context stay on it instead of GPU 0), plain ``cuda`` elsewhere."""
    index = worker_cuda_index(_worker_slot, torch.cuda.device_count())
    if index is None:
        return torch.device("cuda")
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


def resolve_device(name: str = "auto"):
    """``auto`` -> CUDA if available, else Apple MPS if available, else CPU; a named device is
    checked against this machine so a typo or a missing GPU is one clear line, not a crash later.
    In a local dask worker on a machine with several GPUs, CUDA without an index is that
    worker's own GPU (:func:`worker_cuda_index`); ``cuda:1`` stays ``cuda:1`` everywhere.

    Raises:
        OptionError: not a torch device, or that device is not on this machine.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return _unindexed_cuda(torch)
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except (RuntimeError, ValueError):
        raise OptionError(f"--device {name!r}: not a torch device (auto, cpu, cuda, cuda:1, mps)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"--device {name!r}: CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise OptionError(f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        if resolved.index is None:
            return _unindexed_cuda(torch)
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"--device {name!r}: MPS is not available on this machine")
    return resolved


def autocast_dtype(device, precision: str = "auto"):
    """The autocast dtype for ``precision`` on ``device``; None means plain float32.

    ``auto``: bf16 on CUDA where supported (fp16 otherwise), float32 elsewhere (CPU autocast is
    slower than float32 for these models, and MPS autocast is not used). ``32``, ``bf16``,
    ``fp16``: that, on any device (an engine's ``autocast=True`` is ``bf16``, ``False`` ``32``)."""
    import torch

    if precision == "32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        from geoalps.train.options import PRECISION_CHOICES

        raise OptionError(f"--precision {precision!r}: use {', '.join(PRECISION_CHOICES)}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(device, dtype):
    """The context a forward pass runs in under :func:`autocast_dtype`'s choice ``dtype``: torch
    autocast to ``dtype`` on ``device``, or autocast explicitly off for None (float32 even inside
    a caller's autocast block). Costs nothing beyond torch's own autocast."""
    import torch

    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)
