"""Per-mask feature vectors for clustering: SAM embedding pooled under the mask (as ALPS does),
the mean of ALL bands of the scene (not only the three the engine sees), spectral indices where
the bands are known, and shape.

Features come in named blocks so the clusterer can weigh each block equally, whatever its width
(SAM gives 256 numbers, indices 2). ``--features spectral`` clusters on band means + indices: the
per-band standard deviation and the shape block split one land cover by texture, edge mixing and
object size (benchmarks/label_quality, issue 13), so they are not clustered; ``shape_measures``
stays available.
"""
from __future__ import annotations

import numpy as np

from geoalps.objects.masks import TileMasks

SHAPE_FEATURES = ("log_area_px", "compactness", "extent", "elongation")


#: The blocks of models saved before the index block (geoalps-kmeans/1): there "spectral" is
#: the mean AND standard deviation of every band, and "shape" is clustered.
LEGACY_BLOCKS = (("spectral", "shape"), ("sam", "spectral", "shape"))


def feature_blocks(mode: str, engine_has_embedding: bool, model_blocks: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The feature blocks a run computes for ``--features mode``; ``model_blocks``: those of a
    saved model the run reuses, which win when they are an older design (LEGACY_BLOCKS), so a
    model saved before the index block still labels with the features it was fitted on."""
    if model_blocks is not None and tuple(model_blocks) in LEGACY_BLOCKS:
        if "sam" in model_blocks and not engine_has_embedding:
            from geoalps.errors import OptionError

            raise OptionError("the saved k-means model pools SAM's image embedding: it needs the sam engine (or sam2)")
        return tuple(model_blocks)
    if mode == "auto":
        mode = "both" if engine_has_embedding else "spectral"
    if mode in ("sam", "both") and not engine_has_embedding:
        from geoalps.errors import OptionError

        raise OptionError(f"--features {mode} needs the sam engine (or sam2; it pools SAM's image embedding)")
    return {"sam": ("sam",), "spectral": ("spectral", "index"), "both": ("sam", "spectral", "index")}[mode]


def compute_features(
    tile_masks: TileMasks,
    blocks: tuple[str, ...],
    data: np.ndarray | None = None,
    stretch: tuple[np.ndarray, np.ndarray] | None = None,
    band_names: tuple[str | None, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Feature blocks for every mask of a tile, each (N, width) float32.

    ``data`` is the tile's (bands, H, W) scene values and ``stretch`` the (low, high) per band
    that map them to about 0..1 (the scene stretch); both are needed only for the spectral and
    index blocks. ``band_names``: the bands' roles ('red', 'nir', ... or None; the scene's
    ``band_roles.names``), for the indices.
    Cost follows the masks' total area (crops), or one pass over the tile for disjoint masks.
    """
    out: dict[str, np.ndarray] = {}
    if "sam" in blocks:
        out["sam"] = pooled_embedding(tile_masks)
    if tuple(blocks) in LEGACY_BLOCKS:
        out["spectral"] = spectral_stats(tile_masks, data, *stretch, with_std=True)
    elif "spectral" in blocks or "index" in blocks:
        means = spectral_stats(tile_masks, data, *stretch)
        if "spectral" in blocks:
            out["spectral"] = means
        if "index" in blocks:
            out["index"] = spectral_indices(means, stretch[0], stretch[1], band_names, data.shape[0])
    if "shape" in blocks:
        out["shape"] = shape_measures(tile_masks)
    return out


def spectral_stats(tile_masks: TileMasks, data: np.ndarray, low: np.ndarray, high: np.ndarray,
                   with_std: bool = False) -> np.ndarray:
    """Mean of every band under each mask, in stretched units ((value - low) / (high - low)):
    (N, bands); ``with_std`` adds each band's standard deviation after the means (N, 2 x bands:
    the spectral block of LEGACY_BLOCKS models). Sums are float64: float32 drifts on big masks."""
    n_bands = data.shape[0]
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    scale = 1.0 / (np.asarray(high, dtype=np.float64).reshape(-1) - low)
    out = np.zeros((len(tile_masks), (2 if with_std else 1) * n_bands), dtype=np.float32)
    if tile_masks.labels is not None and len(tile_masks):
        index = tile_masks.index_image().ravel()
        n = len(tile_masks) + 1
        counts = np.maximum(np.bincount(index, minlength=n), 1)[1:]
        for b in range(n_bands):
            values = data[b].ravel().astype(np.float64) - low[b]  # nodata pixels have index 0: ignored
            mean = np.bincount(index, values, n)[1:] / counts
            out[:, b] = mean * scale[b]
            if with_std:
                square = np.bincount(index, values * values, n)[1:] / counts
                out[:, n_bands + b] = np.sqrt(np.maximum(square - mean * mean, 0.0)) * scale[b]
        return np.nan_to_num(out)
    for i, (crop, (r0, c0, r1, c1)) in enumerate(zip(tile_masks.crops, tile_masks.boxes)):
        values = (data[:, r0:r1, c0:c1][:, crop].astype(np.float64) - low[:, None]) * scale[:, None]
        if values.size:
            out[i, :n_bands] = values.mean(axis=1)
            if with_std:
                out[i, n_bands:] = values.std(axis=1)
    return np.nan_to_num(out)


#: Width of the index block.
INDEX_FEATURES = 2
#: What the index block holds for bands of unknown roles (zeros before 2026-12-06). Part of a
#: run's resume fingerprint: a work folder whose tiles hold the other kind is not mixed with new tiles.
UNKNOWN_ROLE_INDICES = "range-ratio,last-vs-first"


def band_roles(band_names: tuple[str | None, ...] | None, n_bands: int) -> dict[str, int | None]:
    """0-based band of red, green, blue and nir from the bands' roles as
    :func:`geoalps.inputs.bands.scene_band_roles` decided them (the scene's ``band_roles.names``);
    a role no band has is None. No band order is assumed: unknown roles give no named indices
    (:func:`spectral_indices` then uses ratios that need no roles)."""
    names = tuple(band_names or ())[:n_bands]
    return {role: names.index(role) if role in names else None for role in ("red", "green", "blue", "nir")}


def spectral_indices(means: np.ndarray, low, high, band_names, n_bands: int) -> np.ndarray:
    """Normalised-difference indices of each mask's mean values (back in scene units): NDVI and
    NDWI (green vs NIR) when red, green and NIR are known, else GRVI (green vs red) and excess
    green for RGB. When the bands' roles are unknown (``band_names``), two ratios that need no
    roles: the spectrum's range (max - min) / (max + min) over the bands, which tells flat
    spectra (roads, roofs) from steep ones (vegetation, water) in any band order, and the
    normalised difference of the last band against the first (sensors store bands in wavelength
    order, either way; a reversed order only flips its sign). Before, unknown roles gave zeros;
    on the scene bank's five selection scenes without band names the ratios gain +0.021 at K and
    +0.046 at 2K (``benchmarks/label_quality``, seventh round). (N, 2)."""
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    raw = means.astype(np.float64) * (high - low) + low
    roles = band_roles(band_names, n_bands)
    r, g, b, nir = (roles[k] for k in ("red", "green", "blue", "nir"))
    out = np.zeros((len(means), INDEX_FEATURES), dtype=np.float32)

    def nd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x - y) / np.maximum(np.abs(x + y), 1e-9)

    if r is not None and g is not None and nir is not None:
        out[:, 0], out[:, 1] = nd(raw[:, nir], raw[:, r]), nd(raw[:, g], raw[:, nir])
    elif r is not None and g is not None and b is not None:
        total = np.maximum(np.abs(raw[:, [r, g, b]].sum(axis=1)), 1e-9)
        out[:, 0], out[:, 1] = nd(raw[:, g], raw[:, r]), (2 * raw[:, g] - raw[:, r] - raw[:, b]) / total
    elif n_bands >= 2:
        out[:, 0] = nd(raw[:, :n_bands].max(axis=1), raw[:, :n_bands].min(axis=1))
        out[:, 1] = nd(raw[:, n_bands - 1], raw[:, 0])
    return np.nan_to_num(out)


def shape_measures(tile_masks: TileMasks) -> np.ndarray:
    """log area, compactness (4 pi A / P^2), extent (area / box area), elongation (1 - minor/major
    axis from second moments): (N, 4)."""
    out = np.zeros((len(tile_masks), len(SHAPE_FEATURES)), dtype=np.float32)
    if tile_masks.labels is not None and len(tile_masks):
        return _disjoint_shape_measures(tile_masks)
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


def _disjoint_shape_measures(tile_masks: TileMasks) -> np.ndarray:
    """:func:`shape_measures` for disjoint masks, from sums over the index image in one pass."""
    index = np.pad(tile_masks.index_image(), 1)  # pixels outside the tile count as background
    n = len(tile_masks) + 1
    flat = index.ravel()
    area = np.bincount(flat, minlength=n)[1:].astype(np.float64)
    # Perimeter: pixel edges whose two sides differ, counted for the mask on each side.
    perimeter = np.zeros(n)
    for a, b in ((index[1:, :], index[:-1, :]), (index[:, 1:], index[:, :-1])):
        differ = a != b
        perimeter += np.bincount(a[differ], minlength=n) + np.bincount(b[differ], minlength=n)
    perimeter = perimeter[1:]
    rows = np.repeat(np.arange(index.shape[0], dtype=np.float64), index.shape[1])
    cols = np.broadcast_to(np.arange(index.shape[1], dtype=np.float64), index.shape).ravel()
    # Second moments about each mask's mean (np.cov, ddof=1) from raw sums.
    sums = {name: np.bincount(flat, w, n)[1:] for name, w in
            (("r", rows), ("c", cols), ("rr", rows * rows), ("cc", cols * cols), ("rc", rows * cols))}
    safe = np.maximum(area, 1)
    dof = np.maximum(area - 1, 1)
    var_r = (sums["rr"] - sums["r"] ** 2 / safe) / dof
    var_c = (sums["cc"] - sums["c"] ** 2 / safe) / dof
    cov_rc = (sums["rc"] - sums["r"] * sums["c"] / safe) / dof
    half_trace, det_term = (var_r + var_c) / 2, np.sqrt(((var_r - var_c) / 2) ** 2 + cov_rc**2)
    small, large = half_trace - det_term, half_trace + det_term
    elongation = 1.0 - np.sqrt(np.maximum(small, 1e-9) / np.maximum(large, 1e-9))
    elongation[area <= 2] = 0.0  # np.eye(2) in the crop path: equal axes
    boxes = tile_masks.boxes
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    out = np.stack([
        np.log(safe),
        np.minimum(1.0, 4 * np.pi * area / np.maximum(perimeter, 1) ** 2),
        area / np.maximum(box_area, 1),
        elongation,
    ], axis=1).astype(np.float32)
    out[area == 0] = 0.0
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
