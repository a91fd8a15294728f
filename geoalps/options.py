"""The two option records of a labelling run, validated once.

- :class:`LabelOptions`: every setting that changes results. A tile's work depends only on
  (scene, window, these settings), which is what lets tiles run in any process, be kept for
  ``--resume`` (the settings are part of the work folder's fingerprint) and give identical output
  anywhere. Frozen and picklable.
- :class:`RunOptions`: how a run executes (workers, cluster, resume, progress, overwrite, tiles
  per engine call). None of them changes an output byte.

The choices and limits below are the library's; the CLI and the QGIS plugin are tested against
them, not given copies.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from geoalps.errors import ModelError, OptionError

ENGINE_CHOICES = ("auto", "sam", "classical")
MODEL_TYPE_CHOICES = ("auto", "vit_b", "vit_l", "vit_h")
FEATURE_CHOICES = ("auto", "sam", "spectral", "both")
SAM_GENERATOR_CHOICES = ("fast", "reference")
#: Smallest tile the engines can work on; the overlap may be at most half the tile.
TILE_SIZE_MIN_PX = 64
CLASSES_MAX = 65534
#: ``--min-area-px`` when not given, for engines without a resolution rule of their own (SAM).
MIN_AREA_PX_DEFAULT = 64


#: Environment variable naming a SAM checkpoint (after ``--checkpoint``, before the cache).
CHECKPOINT_ENV = "GEOALPS_SAM_CHECKPOINT"


def explicit_checkpoint(option: str | os.PathLike | None) -> tuple[str | None, str]:
    """The checkpoint named by ``--checkpoint`` or, failing that, ``GEOALPS_SAM_CHECKPOINT``,
    with where it came from (for messages); (None, "") when neither names one."""
    if option:
        return str(option), "--checkpoint"
    from_env = os.environ.get(CHECKPOINT_ENV, "").strip()
    if from_env:
        return from_env, CHECKPOINT_ENV
    return None, ""


def check_tiling(tile_size_px: int, overlap_px: int) -> None:
    """The one tile/overlap rule: tiles of at least :data:`TILE_SIZE_MIN_PX`, overlap 0..tile/2."""
    if tile_size_px < TILE_SIZE_MIN_PX:
        raise OptionError(f"--tile-size must be at least {TILE_SIZE_MIN_PX} px")
    if not 0 <= overlap_px <= tile_size_px // 2:
        raise OptionError(f"--overlap must be between 0 and half the tile size ({tile_size_px // 2} px)")


@dataclass(frozen=True)
class LabelOptions:
    """Settings of ``geoalps label`` that change results; names follow the CLI options
    (``--tile-size`` -> ``tile_size``)."""

    engine: str = "auto"
    checkpoint: str | None = None
    model_type: str = "auto"
    device: str = "auto"
    sam_generator: str = "fast"
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
    crop_layers: int = 0
    #: SAM's box non-maximum suppression inside the generator (segment_anything's box_nms_thresh).
    box_nms_iou: float = 0.7
    #: None = the engine's choice: 64 px for SAM, the classical engine's smallest region, which
    #: follows the ground resolution (geoalps.engines.classical.region_scale).
    min_area_px: int | None = None
    max_area_frac: float = 0.3
    #: Mask-IoU duplicate removal inside a tile, after the engine.
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
        """Check values a user can get wrong; resolve ``checkpoint`` (option, environment)."""
        for name, value, choices in (("--engine", self.engine, ENGINE_CHOICES),
                                     ("--model-type", self.model_type, MODEL_TYPE_CHOICES),
                                     ("--features", self.features, FEATURE_CHOICES),
                                     ("--sam-generator", self.sam_generator, SAM_GENERATOR_CHOICES)):
            if value not in choices:
                raise OptionError(f"{name} must be one of {', '.join(choices)}")
        check_tiling(self.tile_size, self.overlap)
        if not 1 <= self.classes <= CLASSES_MAX:
            raise OptionError(f"--classes must be between 1 and {CLASSES_MAX}")
        if self.min_area_px is not None and self.min_area_px < 1:
            raise OptionError("--min-area-px must be at least 1")
        if not 0 < self.max_area_frac <= 1:
            raise OptionError("--max-area-frac must be in (0, 1]")
        for name, value in (("--dedupe-iou", self.dedupe_iou), ("--box-nms-iou", self.box_nms_iou)):
            if not 0 <= value <= 1:
                raise OptionError(f"{name} must be in [0, 1]")
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise OptionError("--points-per-side and --points-per-batch must be positive")
        checkpoint, source = explicit_checkpoint(self.checkpoint)
        if checkpoint and not os.path.isfile(checkpoint):
            raise ModelError(f"{checkpoint}: SAM checkpoint not found (from {source})")
        return replace(self, checkpoint=checkpoint)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunOptions:
    """How a labelling run executes; none of these changes the output.

    ``workers``/``scheduler``: tiles on a local dask cluster of that many processes, or on an
    existing cluster ("tcp://host:port"); 1 runs in this process. ``resume``/``keep_work``/
    ``work_dir``: the work folder of finished tiles (default ``OUTPUT.geoalps-work``).
    ``tile_batch``: tiles per engine call (0 = the engine's choice: 1 on CPU, by free memory on
    CUDA). ``overwrite``: replace outputs and a stale work folder. ``quiet``/``progress_lines``:
    no progress at all / ``geoalps-progress:`` lines instead of a bar.
    """

    workers: int = 1
    scheduler: str | None = None
    resume: bool = False
    keep_work: bool = False
    work_dir: str | None = None
    tile_batch: int = 0
    overwrite: bool = False
    quiet: bool = False
    progress_lines: bool = False

    def validated(self) -> "RunOptions":
        if self.workers < 1:
            raise OptionError("--workers must be at least 1")
        if self.tile_batch < 0:
            raise OptionError("--tile-batch must be 0 (auto) or a positive number of tiles")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise OptionError(f"--scheduler {self.scheduler!r}: give the address as tcp://HOST:PORT")
        return self


def split_options(values: dict[str, Any]) -> tuple[LabelOptions, RunOptions]:
    """Keyword arguments (the CLI's or ``label()``'s) into the two records; unknown names are an error."""
    label_names = {f.name for f in fields(LabelOptions)}
    run_names = {f.name for f in fields(RunOptions)}
    unknown = sorted(set(values) - label_names - run_names)
    if unknown:
        raise OptionError(f"unknown option(s): {', '.join(unknown)}")
    return (LabelOptions(**{k: v for k, v in values.items() if k in label_names}),
            RunOptions(**{k: v for k, v in values.items() if k in run_names}))
