"""geoalps.devices: one resolver for every --device option."""
from __future__ import annotations

import pytest
import torch

from geoalps.devices import autocast, autocast_dtype, resolve_device
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


def test_autocast_runs_in_the_policys_dtype_and_float32_for_none():
    """The context the engines and training enter: bf16 matmuls under bf16, float32 under None,
    even inside an enclosing bf16 autocast (the engines' float32 paths must stay float32)."""
    cpu = torch.device("cpu")
    a, b = torch.ones(4, 4), torch.ones(4, 4)
    with autocast(cpu, autocast_dtype(cpu, "bf16")):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(cpu, autocast_dtype(cpu, "auto")):
        assert (a @ b).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16), autocast(cpu, None):
        assert (a @ b).dtype == torch.float32
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        with autocast(cuda, autocast_dtype(cuda, "auto")):
            assert (a.to(cuda) @ b.to(cuda)).dtype in (torch.bfloat16, torch.float16)

