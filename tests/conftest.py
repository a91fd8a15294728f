"""Shared test fixtures: small rasters written with rasterio, the repo and shared-data paths."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOALPS_SHARED", REPO.parent / "shared"))
REALDATA = SHARED / "realdata"
#: A north-up transform with an odd origin and non-square pixels: catches half-pixel and axis slips.
ODD_TRANSFORM = Affine(0.37, 0.0, 412345.67, 0.0, -0.53, 5123456.78)


def write_raster(path, data: np.ndarray, transform=ODD_TRANSFORM, crs="EPSG:32633", nodata=None, **extra) -> Path:
    """Write (bands, H, W) or (H, W) ``data`` as a GeoTIFF; ``crs=None`` leaves it ungeoreferenced."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, transform=transform, nodata=nodata, **extra)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return Path(path)


def random_boxes(n: int, size: int, seed: int = 0, sides: tuple[int, int] = (15, 55),
                 margin: int = 60) -> list[tuple[int, int, int, int]]:
    """``n`` rectangles (r0, c0, r1, c1) in a ``size`` px square, sides drawn from ``sides``,
    top-left corners at least ``margin`` px from the far edges."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        r, c = rng.integers(0, size - margin, 2)
        out.append((int(r), int(c), int(r + rng.integers(*sides)), int(c + rng.integers(*sides))))
    return out


def write_corrupt_jpeg_cog(path, data: np.ndarray) -> Path:
    """``data`` (3, H, W) uint8 as a JPEG COG of 256 px blocks with 3,000 bytes overwritten 30 %
    into the file: GDAL reports "JPEGLib" for a block and hands back pixels anyway."""
    import rasterio
    from rasterio.transform import from_origin

    _, height, width = data.shape
    with rasterio.open(path, "w", driver="COG", width=width, height=height, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(400000, 5000000, 1, 1), compress="JPEG",
                       blocksize=256, overviews="NONE") as dst:
        dst.write(data)
    raw = bytearray(Path(path).read_bytes())
    at = int(len(raw) * 0.3)
    raw[at:at + 3000] = np.random.default_rng(0).integers(0, 256, 3000).astype(np.uint8).tobytes()
    Path(path).write_bytes(bytes(raw))
    return Path(path)


def scene_with_objects(height: int, width: int, boxes, seed: int = 0, bands: int = 3, dtype="uint8") -> np.ndarray:
    """A textured background with solid, distinctly coloured rectangles at ``boxes`` (r0, c0, r1, c1)."""
    rng = np.random.default_rng(seed)
    data = np.empty((bands, height, width), dtype=np.float64)
    data[:] = np.array([90, 120, 80, 140][:bands] + [100] * max(0, bands - 4))[:, None, None]
    data += rng.normal(0, 2.0, size=data.shape)
    palette = [(220, 40, 40), (40, 40, 220), (240, 240, 60), (30, 200, 200), (200, 60, 200), (250, 150, 30)]
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        colour = palette[i % len(palette)]
        for b in range(bands):
            data[b, r0:r1, c0:c1] = colour[b % 3] + rng.normal(0, 1.0, size=(r1 - r0, c1 - c0))
    scale = 1 if dtype == "uint8" else 40
    return np.clip(data * scale, 1, np.iinfo(dtype).max if np.dtype(dtype).kind in "ui" else None).astype(dtype)


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"shared real data not found at {REALDATA} (it sits beside the repository in CI)")
    return REALDATA
