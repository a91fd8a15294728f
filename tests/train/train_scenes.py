"""Tiny multispectral scenes with known classes, and the fixtures of the geoalps.train tests.

Scenes use a north-up transform with an odd origin and non-square pixels, so any half-pixel or
axis slip in tiling, reading or writing shows up as misplaced classes.

Test modules import what they need from here. There is deliberately no tests/train/conftest.py:
pytest imports every conftest.py outside a package as the one module ``conftest``, and the tests
in tests/ do ``from conftest import ...``; a second conftest here would shadow theirs whenever
it is loaded last (e.g. ``pytest tests/train tests/test_scene.py``).
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

#: Odd origin, non-square pixels, not a divisor of anything round.
TRAIN_TRANSFORM = Affine(0.73, 0.0, 500123.37, 0.0, -0.61, 4100077.91)
CRS = "EPSG:32633"


def class_pattern(height: int, width: int, n_classes: int = 3, block: int = 12, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 classes: a checker of ``block`` px squares, shuffled so every class borders every other."""
    rng = np.random.default_rng(seed)
    rows, cols = -(-height // block), -(-width // block)
    cells = rng.integers(0, n_classes, size=(rows, cols))
    return np.kron(cells, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)


def write_scene(path, classes: np.ndarray, bands: int = 4, transform=TRAIN_TRANSFORM, nodata=0, seed: int = 0, dtype="uint16") -> Path:
    """A ``bands``-band scene where class k brightens band k % bands (plus noise): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    h, w = classes.shape
    data = 800 + rng.normal(0, 40, size=(bands, h, w))
    for k in range(int(classes.max()) + 1):
        data[k % bands][classes == k] += 900
    data = np.clip(data, 1, 60000).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands, dtype=dtype, crs=CRS,
                       transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return Path(path)


def write_labels(path, classes: np.ndarray, transform=TRAIN_TRANSFORM, nodata=255, crs=CRS) -> Path:
    """A uint8 class raster (with colour table) like ``geoalps label --raster-out`` writes."""
    h, w = classes.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=crs,
                       transform=transform, nodata=nodata) as dst:
        dst.write(classes.astype(np.uint8), 1)
        dst.write_colormap(1, {0: (200, 30, 30, 255), 1: (30, 200, 30, 255), 2: (30, 30, 200, 255)})
    return Path(path)


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread: on a shared 2-core machine, two intra-op threads waiting on each
    other's time slices made tiny-model steps 5-20x slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _train_test_environment():
    # timm's table resizing and torchgeo emit deprecation chatter that is not ours to fix.
    with warnings.catch_warnings(), one_torch_thread():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


@pytest.fixture
def scene(tmp_path):
    """(image path, label path, classes) for a 4-band 150 x 173 px scene with 3 classes."""
    classes = class_pattern(150, 173)
    return write_scene(tmp_path / "scene.tif", classes), write_labels(tmp_path / "scene.labels.tif", classes), classes


_TRAINED: dict = {}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny model pre-trained on pseudo-labels and fine-tuned on ground truth, once per session.

    Returns (model path, scene path, label path, classes, pretrained path). Test modules import
    this fixture, so pytest keeps one instance per module; the memo trains only once.
    """
    from geoalps.train.loop import TrainOptions, finetune, pretrain

    if _TRAINED:
        return _TRAINED["result"]

    folder = tmp_path_factory.mktemp("trained")
    classes = class_pattern(150, 173, seed=1)
    image = write_scene(folder / "scene.tif", classes, seed=1)
    labels = write_labels(folder / "scene.labels.tif", classes)
    options = TrainOptions(epochs=2, steps_per_epoch=12, batch_size=4, lr=2e-3, quiet=True)
    pretrained = folder / "pretrained.pt"
    with warnings.catch_warnings(), one_torch_thread():
        warnings.simplefilter("ignore")
        pretrain([image], [labels], pretrained, objective="pseudo", size="tiny", options=options)
        model = folder / "model.pt"
        finetune([image], [labels], model, init=pretrained, options=options, class_names=["red", "green", "blue"])
    _TRAINED["result"] = (model, image, labels, classes, pretrained)
    return _TRAINED["result"]


def write_tail_truncated_labels(path, classes: np.ndarray, keep: float = 0.85) -> Path:
    """A uint8 class COG (256 px blocks, overviews) cut to its first ``keep`` of bytes: GDAL's COG
    layout puts the overviews before the full-resolution blocks, so the header and overviews
    (and a decimated read of at most 1024 px from them) still read while the full-resolution
    blocks at the end are gone. Needs a raster over 2048 px so the decimated read uses an overview."""
    h, w = classes.shape
    with rasterio.open(path, "w", driver="COG", width=w, height=h, count=1, dtype="uint8", crs=CRS,
                       transform=TRAIN_TRANSFORM, nodata=255, blocksize=256, compress="DEFLATE") as dst:
        dst.write(classes.astype(np.uint8), 1)
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: int(len(raw) * keep)])
    return Path(path)
