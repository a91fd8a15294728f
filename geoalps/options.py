"""``LabelOptions``: every setting of a labelling run in one frozen, picklable record.

A tile's work depends only on (scene, window, options); keeping the options in one value is what
lets tiles run in any process, be cached for ``--resume`` and give identical output anywhere.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

ENGINE_CHOICES = ("auto", "sam", "classical")
MODEL_TYPE_CHOICES = ("auto", "vit_b", "vit_l", "vit_h")
FEATURE_CHOICES = ("auto", "sam", "spectral", "both")


@dataclass(frozen=True)
class LabelOptions:
    """Settings of ``geoalps label``; names follow the CLI options (``--tile-size`` -> tile_size)."""

    engine: str = "auto"
    checkpoint: str | None = None
    model_type: str = "auto"
    device: str = "auto"
    sam_generator: str = "fast"
    points_per_side: int = 32
    points_per_batch: int = 64
    tile_batch: int = 0
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
    crop_layers: int = 0
    min_area_px: int = 64
    max_area_frac: float = 0.3
    dedupe_iou: float = 0.7
    classical_scale: float = 200.0
    bands: str | None = None
    nodata: float | None = None
    tile_size: int = 1024
    overlap: int = 128
    classes: int = 10
    features: str = "auto"
    seed: int = 0
    allow_pixel_coords: bool = False

    def validated(self) -> "LabelOptions":
        """Check values a user can get wrong; resolve ``checkpoint`` from the environment."""
        from geoalps.errors import GeoAlpsError

        if self.engine not in ENGINE_CHOICES:
            raise GeoAlpsError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}")
        if self.model_type not in MODEL_TYPE_CHOICES:
            raise GeoAlpsError(f"--model-type must be one of {', '.join(MODEL_TYPE_CHOICES)}")
        if self.features not in FEATURE_CHOICES:
            raise GeoAlpsError(f"--features must be one of {', '.join(FEATURE_CHOICES)}")
        if self.tile_size < 64:
            raise GeoAlpsError("--tile-size must be at least 64 px")
        if not 0 <= self.overlap <= self.tile_size // 2:
            raise GeoAlpsError(f"--overlap must be between 0 and half the tile size ({self.tile_size // 2} px)")
        if self.tile_batch < 0:
            raise GeoAlpsError("--tile-batch must be 0 (auto) or a positive number of tiles")
        if self.classes < 1:
            raise GeoAlpsError("--classes must be at least 1")
        if not 0 < self.max_area_frac <= 1:
            raise GeoAlpsError("--max-area-frac must be in (0, 1]")
        checkpoint = str(self.checkpoint or os.environ.get("GEOALPS_SAM_CHECKPOINT") or "") or None
        if checkpoint and not os.path.isfile(checkpoint):
            source = "--checkpoint" if self.checkpoint else "GEOALPS_SAM_CHECKPOINT"
            raise GeoAlpsError(f"{checkpoint}: SAM checkpoint not found (from {source})")
        return replace(self, checkpoint=str(checkpoint) if checkpoint else None)

    def as_dict(self) -> dict:
        return asdict(self)
