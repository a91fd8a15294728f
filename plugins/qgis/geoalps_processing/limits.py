"""The choices, defaults and limits of the plugin's parameters (pure stdlib, no QGIS import).

They mirror geoalps's own (``geoalps.options``); the plugin cannot import geoalps inside QGIS, so
the library's test suite (tests/cli/test_plugin_limits.py) checks these values against the
library's instead of anyone copying them by hand.
"""
from __future__ import annotations

ENGINES = ("auto", "sam", "classical", "sam2")  # new engines go last: saved enum indexes stay valid
MODEL_TYPES = ("auto", "vit_b", "vit_l", "vit_h", "hiera_tiny", "hiera_small", "hiera_base_plus", "hiera_large")
#: The plugin asks for at least two classes (one class labels nothing); the library allows 1.
CLASSES_MIN = 2
CLASSES_MAX = 65534
CLASSES_DEFAULT = 10
TILE_SIZE_MIN_PX = 64
TILE_SIZE_DEFAULT_PX = 1024
OVERLAP_DEFAULT_PX = 128
SEED_DEFAULT = 0
#: ``--classical-scale``, the classical engine's region size; the library takes any positive
#: number, the plugin asks for at least 1 (a number field cannot exclude 0 itself).
CLASSICAL_SCALE_MIN = 1.0
CLASSICAL_SCALE_DEFAULT = 200.0


def overlap_problem(tile_size_px: int, overlap_px: int) -> str | None:
    """geoalps's tile/overlap rule (overlap at most half the tile), as a message, or None."""
    if tile_size_px < TILE_SIZE_MIN_PX:
        return f"Tile size ({tile_size_px} px) must be at least {TILE_SIZE_MIN_PX} px."
    if not 0 <= overlap_px <= tile_size_px // 2:
        return f"Tile overlap ({overlap_px} px) must be at most half the tile size ({tile_size_px} px)."
    return None

#: ``--band-names``: what each band is, one of these a band (geoalps.inputs.bands.BAND_NAME_VOCABULARY).
BAND_NAMES = ("coastal", "blue", "green", "red", "rededge", "nir", "swir1", "swir2", "pan", "other")


def band_names_problem(text: str, band_count: int | None = None) -> str | None:
    """geoalps's ``--band-names`` rule (known names, one a band), as a message, or None."""
    names = [part.strip().lower() for part in text.split(",")]
    unknown = [n for n in names if n not in BAND_NAMES]
    if unknown:
        return f"Band names: unknown name {unknown[0]!r} (use {', '.join(BAND_NAMES)})."
    if band_count is not None and len(names) != band_count:
        return f"Band names: {len(names)} given but the raster has {band_count} bands (one name a band)."
    return None

#: ``geoalps label`` keeps its finished tiles in ``OUTPUT`` + this suffix (geoalps.labelling.run),
#: which ``--resume`` continues from; and exits with this code (geoalps.errors.ResumeError) when
#: that folder cannot be resumed (made for other scenes or settings, damaged).
WORK_FOLDER_SUFFIX = ".geoalps-work"
RESUME_REFUSED_EXIT_CODE = 7

#: ``geoalps classes gallery``: example chips per class (1..32, default 6), of which
#: ``--random-chips`` (0..32, default 2, at most the chips) are drawn at random.
GALLERY_CHIPS_MIN = 1
GALLERY_CHIPS_MAX = 32
GALLERY_CHIPS_DEFAULT = 6
GALLERY_RANDOM_CHIPS_DEFAULT = 2
#: ``geoalps evaluate``: object IoU threshold (0..1, default 0.5), smallest true object (px).
EVALUATE_IOU_DEFAULT = 0.5
EVALUATE_MIN_OBJECT_PX_DEFAULT = 64
EVALUATE_OBJECTS_BY = ("component", "value")
