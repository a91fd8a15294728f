"""Per-mask feature vectors for clustering: SAM embedding pooled under the mask (as ALPS does),
spectral statistics of ALL bands of the scene (not only the three the engine sees) and shape.

Features come in named blocks so the clusterer can weigh each block equally, whatever its width
(SAM gives 256 numbers, shape 4).
"""
from __future__ import annotations

import numpy as np

from geoalps.masks import TileMasks

SHAPE_FEATURES = ("log_area_px", "compactness", "extent", "elongation")


def feature_blocks(mode: str, engine_has_embedding: bool) -> tuple[str, ...]:
    """The feature blocks a run computes for ``--features mode``."""
    if mode == "auto":
        mode = "both" if engine_has_embedding else "spectral"
    if mode in ("sam", "both") and not engine_has_embedding:
        from geoalps.errors import GeoAlpsError

        raise GeoAlpsError(f"--features {mode} needs the sam engine (it pools SAM's image embedding)")
    return {"sam": ("sam",), "spectral": ("spectral", "shape"), "both": ("sam", "spectral", "shape")}[mode]


def compute_features(
    tile_masks: TileMasks, bands_norm: np.ndarray | None, blocks: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Feature blocks for every mask of a tile, each (N, width) float32.

    ``bands_norm`` is the tile's (bands, H, W) data stretched to about 0..1 per band (needed only
    for the spectral block). Cost is
    proportional to the masks' total area (each mask is read from its bounding-box crop).
    """
    out: dict[str, np.ndarray] = {}
    if "sam" in blocks:
        out["sam"] = pooled_embedding(tile_masks)
    if "spectral" in blocks:
        out["spectral"] = spectral_stats(tile_masks, bands_norm)
    if "shape" in blocks:
        out["shape"] = shape_measures(tile_masks)
    return out


def spectral_stats(tile_masks: TileMasks, bands_norm: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of every band under each mask: (N, 2 x bands)."""
    n_bands = bands_norm.shape[0]
    out = np.zeros((len(tile_masks), 2 * n_bands), dtype=np.float32)
    for i, (crop, (r0, c0, r1, c1)) in enumerate(zip(tile_masks.crops, tile_masks.boxes)):
        values = bands_norm[:, r0:r1, c0:c1][:, crop]
        if values.size:
            out[i, :n_bands] = values.mean(axis=1)
            out[i, n_bands:] = values.std(axis=1)
    return np.nan_to_num(out)


def shape_measures(tile_masks: TileMasks) -> np.ndarray:
    """log area, compactness (4 pi A / P^2), extent (area / box area), elongation (1 - minor/major
    axis from second moments): (N, 4)."""
    out = np.zeros((len(tile_masks), len(SHAPE_FEATURES)), dtype=np.float32)
    for i, crop in enumerate(tile_masks.crops):
        area = int(np.count_nonzero(crop))
        if not area:
            continue
        padded = np.pad(crop, 1)
        # Perimeter as the number of pixel edges between object and background.
        perimeter = np.count_nonzero(padded[1:, :] != padded[:-1, :]) + np.count_nonzero(
            padded[:, 1:] != padded[:, :-1]
        )
        rows, cols = np.nonzero(crop)
        cov = np.cov(np.vstack([rows, cols])) if area > 2 else np.eye(2)
        eig = np.sort(np.linalg.eigvalsh(np.atleast_2d(cov)))
        elongation = 1.0 - np.sqrt(max(eig[0], 1e-9) / max(eig[-1], 1e-9))
        out[i] = (
            np.log(area),
            min(1.0, 4 * np.pi * area / max(perimeter, 1) ** 2),
            area / crop.size,
            elongation,
        )
    return out


def pooled_embedding(tile_masks: TileMasks) -> np.ndarray:
    """SAM image-encoder embedding averaged under each mask, weighted by how much of every
    embedding cell the mask covers: (N, channels)."""
    embedding = tile_masks.embedding
    if embedding is None:
        raise ValueError("this engine gives no embedding to pool")
    channels = embedding.shape[0]
    grid_rows, grid_cols = tile_masks.embedding_extent or embedding.shape[1:]
    height, width = tile_masks.tile_shape
    out = np.zeros((len(tile_masks), channels), dtype=np.float32)
    for i, (crop, (r0, c0, r1, c1)) in enumerate(zip(tile_masks.crops, tile_masks.boxes)):
        cell_r = np.minimum(np.arange(r0, r1) * grid_rows // height, grid_rows - 1)
        cell_c = np.minimum(np.arange(c0, c1) * grid_cols // width, grid_cols - 1)
        # Weight of each (cell row, cell col) = mask pixels falling in that cell.
        row_onehot = (cell_r[None, :] == np.arange(cell_r[0], cell_r[-1] + 1)[:, None]).astype(np.float32)
        col_onehot = (cell_c[:, None] == np.arange(cell_c[0], cell_c[-1] + 1)[None, :]).astype(np.float32)
        weights = row_onehot @ crop.astype(np.float32) @ col_onehot
        total = weights.sum()
        if total == 0:
            continue
        cells = embedding[:, cell_r[0] : cell_r[-1] + 1, cell_c[0] : cell_c[-1] + 1]
        out[i] = (cells * weights[None]).sum(axis=(1, 2)) / total
    return out
