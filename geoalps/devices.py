"""Which torch device a run uses, and in which precision: the one resolver behind every
``--device`` option and the one precision policy (:func:`autocast_dtype`, entered with
:func:`autocast`) of training, prediction and the SAM engines.

torch is imported only when a device is resolved (the SAM engine, training, predict), never by
the classical engine or ``geoalps --help``.
"""
from __future__ import annotations

from geoalps.errors import OptionError


def resolve_device(name: str = "auto"):
    """``auto`` -> CUDA if available, else Apple MPS if available, else CPU; a named device is
    checked against this machine so a typo or a missing GPU is one clear line, not a crash later.

    Raises:
        OptionError: not a torch device, or that device is not on this machine.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
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
