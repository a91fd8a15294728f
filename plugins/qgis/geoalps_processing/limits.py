"""The choices, defaults and limits of the plugin's parameters (pure stdlib, no QGIS import).

They mirror geoalps's own (``geoalps.options``); the plugin cannot import geoalps inside QGIS, so
the library's test suite (tests/cli/test_plugin_limits.py) checks these values against the
library's instead of anyone copying them by hand.
"""
from __future__ import annotations

from dataclasses import dataclass

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
#: ``--classical-split`` is on by default (LabelOptions.classical_split).
CLASSICAL_SPLIT_DEFAULT = True


def overlap_problem(tile_size_px: int, overlap_px: int) -> str | None:
    """geoalps's tile/overlap rule (overlap at most half the tile), as a message, or None."""
    if tile_size_px < TILE_SIZE_MIN_PX:
        return f"Tile size ({tile_size_px} px) must be at least {TILE_SIZE_MIN_PX} px."
    if not 0 <= overlap_px <= tile_size_px // 2:
        return f"Tile overlap ({overlap_px} px) must be at most half the tile size ({tile_size_px} px)."
    return None

#: Suffixes geoalps reads as vector data; a vector layer in any other file format is handed over
#: as a temporary GeoPackage. A subset of geoalps.outputs.formats.VECTOR_SUFFIXES, the one list
#: (tests/cli/test_plugin_limits.py holds it there; the plugin cannot import geoalps inside QGIS).
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")

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


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainParameter:
    """One parameter of the training algorithms, declared once: the Processing parameter
    ``name``, the CLI option ``flag`` it becomes, its ``kind`` (int, float, bool, enum, string,
    file) and default. ``field``: the geoalps.train.options.TrainOptions field it sets (None for a
    command's own option); ``negate``: a bool passed as ``flag`` when False (``--no-augment``);
    ``unset``: a value meaning "not passed, geoalps decides" (0 tile size: the model's).
    tests/cli/test_plugin_limits.py holds every record against TrainOptions and the click
    commands (flag, default, range, choices), so nothing here is copied by hand unchecked."""

    name: str
    flag: str
    kind: str
    default: object
    description: str
    field: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    negate: bool = False
    unset: object = None
    advanced: bool = False


#: geoalps.train.options.MODEL_SIZE_CHOICES, OBJECTIVE_CHOICES, PRECISION_CHOICES.
TRAIN_MODEL_SIZES = ("swin_t", "swin_s", "swin_b", "tiny")
TRAIN_OBJECTIVES = ("pseudo", "mim", "both")
TRAIN_PRECISIONS = ("auto", "32", "bf16", "fp16")

#: The TrainOptions fields the algorithms expose, shared by Pre-train and Train.
TRAIN_OPTIONS = (
    TrainParameter("EPOCHS", "--epochs", "int", 10, "Epochs", field="epochs", minimum=1),
    TrainParameter("STEPS_PER_EPOCH", "--steps-per-epoch", "int", 50, "Batches of random tiles per epoch",
                   field="steps_per_epoch", minimum=1),
    TrainParameter("BATCH_SIZE", "--batch-size", "int", 8, "Tiles per batch", field="batch_size", minimum=1),
    TrainParameter("LR", "--lr", "float", 3e-4, "Peak learning rate (AdamW, warm-up then cosine decay)", field="lr",
                   minimum=1e-7, advanced=True),
    TrainParameter("WEIGHT_DECAY", "--weight-decay", "float", 0.05, "Weight decay", field="weight_decay", minimum=0.0,
                   advanced=True),
    TrainParameter("VAL_FRACTION", "--val-fraction", "float", 0.2,
                   "Share of each labelled area held out for validation (a strip at its bottom)", field="val_fraction",
                   minimum=0.0, maximum=0.95),
    TrainParameter("SEED", "--seed", "int", 0, "Random seed", field="seed", minimum=0, maximum=2**31 - 1),
    TrainParameter("DEVICE", "--device", "string", "auto", "Device (auto, cpu, cuda, cuda:1, mps)", field="device",
                   advanced=True),
    TrainParameter("PRECISION", "--precision", "enum", "auto", "Precision (auto: bf16/fp16 on CUDA, float32 elsewhere)",
                   field="precision", choices=TRAIN_PRECISIONS, advanced=True),
    TrainParameter("THREADS", "--threads", "int", 0, "CPU threads (0: torch's default)", field="threads", minimum=0,
                   unset=0, advanced=True),
    TrainParameter("AUGMENT", "--no-augment", "bool", True, "Random flips and quarter turns", field="augment",
                   negate=True, advanced=True),
    TrainParameter("RESUME", "--resume", "bool", False,
                   "Resume an interrupted run (from the .last.pt file beside the output)", field="resume"),
)
#: TrainOptions fields the algorithms do not expose, and why (the test checks the two lists
#: cover every field).
TRAIN_OPTIONS_NOT_EXPOSED = {
    "warmup_fraction": "not a CLI option",
    "workers": "DataLoader workers: geoalps's default (0 on CPU, 4 on GPU)",
    "progress_lines": "always on: the plugin reads the progress lines",
    "quiet": "never: the plugin shows the epoch lines in the log",
    "timeout_s": "data-parallel runs only; the plugin runs one process",
}
#: Options of both commands that are not TrainOptions fields.
TRAIN_MODEL_OPTIONS = (
    TrainParameter("MODEL_SIZE", "--model", "enum", "swin_t", "Backbone size (tiny: quick CPU runs)",
                   choices=TRAIN_MODEL_SIZES),
    TrainParameter("TILE_SIZE", "--tile-size", "int", 0,
                   "Tile size in pixels, a multiple of 32 (0: the model's, 224; tiny 64)", minimum=0, unset=0),
    TrainParameter("IGNORE_VALUE", "--ignore-value", "string", "",
                   "Label value to skip besides the labels' nodata (empty: none)", unset="", advanced=True),
)
#: ``geoalps pretrain``'s own options.
PRETRAIN_OPTIONS = (
    TrainParameter("OBJECTIVE", "--objective", "enum", "pseudo",
                   "Objective (pseudo: the pseudo-classes, ALPS; mim: masked image modelling; both)",
                   choices=TRAIN_OBJECTIVES),
    TrainParameter("MASK_RATIO", "--mask-ratio", "float", 0.6, "Masked image modelling: share of patches hidden",
                   minimum=0.05, maximum=0.95, advanced=True),
)
#: ``geoalps train``'s own options.
FINETUNE_OPTIONS = (
    TrainParameter("INIT", "--init", "file", "", "Pre-trained model to start from (from Pre-train; optional)",
                   unset=""),
    TrainParameter("LABEL_FRACTION", "--label-fraction", "float", 1.0,
                   "Share of the labelled area training may see (scattered tile cells)", minimum=0.01, maximum=1.0),
    TrainParameter("LABEL_COLUMN", "--label-column", "string", "",
                   "Vector labels: integer class column (>= 1; empty: every polygon is class 1)", unset=""),
    TrainParameter("CLASS_NAMES", "--class-names", "string", "",
                   "Class names of ids 0..K-1, comma-separated (empty: from the label raster)", unset=""),
)


def train_arguments(specs: tuple[TrainParameter, ...], values: dict) -> list[str]:
    """The CLI arguments of ``specs`` for ``values`` (parameter name -> value; enums as the
    chosen text): every value given explicitly, except ``unset`` ones and unset negated flags."""
    args: list[str] = []
    for spec in specs:
        value = values.get(spec.name, spec.default)
        if spec.unset is not None and value == spec.unset:
            continue
        if spec.kind == "bool":
            if bool(value) != spec.negate:  # a plain flag when on, a negated one (--no-augment) when off
                args.append(spec.flag)
            continue
        args += [spec.flag, repr(float(value)) if spec.kind == "float" else str(value)]
    return args


def train_problem(values: dict) -> str | None:
    """geoalps's rule for the training tile (0: the model's; else a multiple of 32 of at least
    ``TILE_SIZE_MIN_PX``: geoalps.train.models.make_arch), as a message, or None."""
    tile = int(values.get("TILE_SIZE") or 0)
    if tile and (tile < TILE_SIZE_MIN_PX or tile % 32):
        return f"Tile size ({tile} px) must be 0 (the model's) or a multiple of 32 of at least {TILE_SIZE_MIN_PX} px."
    return None


def enum_help(choices: tuple[str, ...]) -> str:
    """How an enum parameter's choices are numbered in qgis_process: ``0 auto, 1 sam, ...``."""
    return ", ".join(f"{i} {choice}" for i, choice in enumerate(choices))
