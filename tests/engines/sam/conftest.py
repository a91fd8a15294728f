"""Shared fixtures: tiny random-weight SAM models saved as real checkpoint files, and loaded."""
from __future__ import annotations

import pytest

from geoalps.engines.sam.models import load_sam
from tests.sam_models import build_tiny_sam, save_sam_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny SAM saved the way official checkpoints are: a plain ``torch.save(state_dict)``."""
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    return save_sam_checkpoint(build_tiny_sam(seed=0), path)


@pytest.fixture(scope="session")
def model(tiny_checkpoint):
    """The tiny model loaded through the user's path (a checkpoint file and load_sam), on CPU."""
    return load_sam(tiny_checkpoint, device="cpu")[0]
