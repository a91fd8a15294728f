"""geoalps.devices: one resolver for every --device option."""
from __future__ import annotations

import pytest
import torch

from geoalps.devices import autocast_dtype, resolve_device
from geoalps.errors import OptionError


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    # auto: CUDA, else Apple MPS, else CPU, whatever this machine has
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    with pytest.raises(OptionError, match="not a torch device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="CUDA is not available"):
            resolve_device("cuda")


def test_autocast_dtype():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16 and autocast_dtype(cpu, "fp16") is torch.float16
    with pytest.raises(OptionError, match="--precision 'fp8'"):
        autocast_dtype(cpu, "fp8")
