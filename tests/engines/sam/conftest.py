"""Shared fixtures: tiny random-weight SAM models saved as real checkpoint files."""
from __future__ import annotations

import pytest

from geoalps.engines.sam.models import build_tiny_sam, save_sam_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny SAM saved the way official checkpoints are: a plain ``torch.save(state_dict)``."""
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    return save_sam_checkpoint(build_tiny_sam(seed=0), path)
