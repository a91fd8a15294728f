"""Multispectral bands -> the three 8-bit channels a mask engine sees.

The stretch uses the scene-level statistics from :mod:`geoalps.inputs.scene`, never per-tile ones, so
neighbouring tiles look alike and no seams appear in appearance.
"""
from __future__ import annotations

import numpy as np

from geoalps.errors import OptionError
from geoalps.inputs.scene import BandStats

#: Named band mappings (1-based band numbers, as GDAL counts them).
BAND_PRESETS: dict[str, tuple[int, int, int]] = {
    "rgb": (1, 2, 3),  # R,G,B[,NIR] band order (aerial, WorldView RGBN, most orthophotos)
    "bgr": (3, 2, 1),
    "nrg": (4, 1, 2),  # false colour for R,G,B,NIR files: vegetation turns red
    "sentinel2-rgb": (4, 3, 2),  # B1..B12 order: B4 red, B3 green, B2 blue
    "sentinel2-nrg": (8, 4, 3),
    "landsat8-rgb": (4, 3, 2),  # bands 1-7 of Landsat-8 OLI
    "landsat8-nrg": (5, 4, 3),
}


def resolve_bands(spec: str | None, band_count: int, path: str) -> tuple[int, int, int]:
    """Turn ``--bands`` (``"4,3,2"``, a preset name, or None) into three 1-based band numbers.

    None picks ``rgb`` for scenes of three or more bands, the single band repeated for one band,
    and (1, 2, 1) for two bands.
    """
    if spec is None or spec == "auto":
        if band_count >= 3:
            return BAND_PRESETS["rgb"]
        return (1, 1, 1) if band_count == 1 else (1, 2, 1)
    key = spec.strip().lower()
    if key in BAND_PRESETS:
        bands = BAND_PRESETS[key]
    else:
        try:
            bands = tuple(int(part) for part in key.split(","))
        except ValueError:
            raise OptionError(
                f"{path}: --bands {spec!r} is neither a list like 4,3,2 nor a preset "
                f"({', '.join(BAND_PRESETS)})"
            ) from None
        if len(bands) == 1:
            bands = bands * 3
        if len(bands) != 3:
            raise OptionError(f"{path}: --bands needs 1 or 3 band numbers, got {spec!r}")
    for band in bands:
        if not 1 <= band <= band_count:
            raise OptionError(
                f"{path}: band {band} does not exist (the scene has {band_count} "
                f"band{'s' if band_count != 1 else ''}; bands are numbered from 1)"
            )
    return bands  # type: ignore[return-value]


def stretch_to_uint8(
    data: np.ndarray, valid: np.ndarray, bands: tuple[int, int, int], stats: BandStats
) -> np.ndarray:
    """(bands, H, W) scene values -> (H, W, 3) uint8 with the scene's percentile stretch.

    Invalid pixels become 0. Costs one float32 copy of three bands of the tile.
    """
    out = np.zeros(data.shape[1:] + (3,), dtype=np.uint8)
    for channel, band in enumerate(bands):
        lo, hi = stats.low[band - 1], stats.high[band - 1]
        values = np.where(valid, data[band - 1], lo).astype(np.float64)  # nodata may be -3.4e38
        scaled = ((values - lo) * (255.0 / (hi - lo))).astype(np.float32)
        np.clip(scaled, 0, 255, out=scaled)
        scaled = np.nan_to_num(scaled, nan=0.0)
        out[..., channel] = np.rint(scaled).astype(np.uint8)
    out[~valid] = 0
    return out
