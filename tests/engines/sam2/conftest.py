"""Shared fixtures: a tiny random-weight SAM 2 saved as the releases are (``{"model": state_dict}``)."""
from __future__ import annotations

import pytest

pytest.importorskip("sam2", reason="pip install 'geoalps[sam2]' (see README)")

from geoalps.engines.sam2.models import load_sam2  # noqa: E402
from tests.sam_models import build_tiny_sam2, save_sam2_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sam2_checkpoint(tmp_path_factory):
    return save_sam2_checkpoint(build_tiny_sam2(seed=0), tmp_path_factory.mktemp("sam2") / "sam2.1_tiny_random.pt")


@pytest.fixture(scope="session")
def sam2_model(tiny_sam2_checkpoint):
    """The tiny model loaded through the user's path (a checkpoint file and load_sam2), on CPU."""
    return load_sam2(tiny_sam2_checkpoint, device="cpu")[0]
