"""The options of a training run (``pretrain``, ``train``), declared and validated once.

:class:`TrainOptions` is to training what :class:`geoalps.options.LabelOptions` is to labelling:
one frozen record with the defaults, and ``validated()`` giving a one-line :class:`OptionError`
for a value a user can get wrong. The choices below (model sizes, precisions, objectives) are
the library's; the CLI (``geoalps.cli.train``), ``geoalps.train.models`` and
``geoalps.devices`` are built from or checked against them, never given copies. The QGIS
plugin cannot import geoalps, so its training parameters are a declared record
(plugins/qgis/geoalps_processing/limits.py) that tests/cli/test_plugin_limits.py holds against
this one.

Importing this module is cheap (no torch).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from geoalps.errors import OptionError

#: Named network sizes (geoalps.train.models.MODEL_SIZES has one entry each); tiny: tests and CPU.
MODEL_SIZE_CHOICES = ("swin_t", "swin_s", "swin_b", "tiny")
#: auto: bf16 (fp16 where bf16 is missing) autocast on CUDA, float32 elsewhere.
PRECISION_CHOICES = ("auto", "32", "bf16", "fp16")
#: pseudo: cross-entropy on pseudo-classes (ALPS); mim: SimMIM; both: the sum.
OBJECTIVE_CHOICES = ("pseudo", "mim", "both")
#: Seconds a data-parallel rank waits for the others in one collective before the run ends with
#: an error (a rank that died or hangs); also the rendezvous wait.
DISTRIBUTED_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class TrainOptions:
    """Budget and machinery shared by pre-training and fine-tuning.

    Args:
        epochs: passes of ``steps_per_epoch`` batches each.
        steps_per_epoch: batches per epoch and per process (tiles are drawn at random, so an
            epoch is a budget).
        batch_size: tiles per batch and per process; a data-parallel run of N processes steps
            on N x ``batch_size`` tiles (the global batch).
        lr: peak AdamW learning rate (after a linear warm-up over ``warmup_fraction`` of
            steps), applied as given whatever the number of processes (no automatic scaling).
        weight_decay: AdamW decay on weight matrices (not on norms, biases, position tables).
        val_fraction: share of each labelled area's rows held out for validation.
        seed: seeds tile sampling, augmentation, masks and initialisation; data-parallel rank r
            draws its tiles, flips and masks from streams seeded with ``seed`` and r.
        device: "auto" (cuda, then mps, then cpu) or a torch device string.
        precision: one of :data:`PRECISION_CHOICES`.
        workers: DataLoader worker processes (None: 0 on CPU, up to 4 on GPU).
        threads: torch CPU threads (None: torch's default). On a busy machine 1 can be several
            times faster than 2, as intra-op threads wait for each other's time slices.
        augment: random flips and quarter turns.
        resume: continue from ``<output>.last.pt`` if it exists (also after a change of the
            number of data-parallel processes).
        progress_lines: ``geoalps-progress:`` lines on stderr instead of a bar.
        quiet: no progress and no per-epoch lines.
        timeout_s: data-parallel runs only: how long a process waits for the others (see
            :data:`DISTRIBUTED_TIMEOUT_S`).
    """

    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    threads: int | None = None
    augment: bool = True
    resume: bool = False
    progress_lines: bool = False
    quiet: bool = False
    timeout_s: float = DISTRIBUTED_TIMEOUT_S

    def validated(self) -> "TrainOptions":
        """The record itself, or a one-line OptionError naming the option and its range."""
        for name, value in (("--epochs", self.epochs), ("--steps-per-epoch", self.steps_per_epoch),
                            ("--batch-size", self.batch_size)):
            if not (isinstance(value, int) and value >= 1):
                raise OptionError(f"{name} must be a positive whole number, got {value!r}")
        if not (_finite(self.lr) and self.lr > 0):
            raise OptionError(f"--lr must be a positive number, got {self.lr!r}")
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            raise OptionError(f"--weight-decay must be 0 or more, got {self.weight_decay!r}")
        if not (_finite(self.warmup_fraction) and 0 <= self.warmup_fraction < 1):
            raise OptionError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not (_finite(self.val_fraction) and 0 <= self.val_fraction < 1):
            raise OptionError(f"--val-fraction must be in [0, 1), got {self.val_fraction!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed < 2**32):
            raise OptionError(f"--seed must be between 0 and {2**32 - 1}, got {self.seed!r}")
        if self.precision not in PRECISION_CHOICES:
            raise OptionError(f"--precision {self.precision!r}: use {', '.join(PRECISION_CHOICES)}")
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers >= 0):
            raise OptionError(f"--workers must be 0 or more, got {self.workers!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads >= 1):
            raise OptionError(f"--threads must be at least 1, got {self.threads!r}")
        if not (_finite(self.timeout_s) and self.timeout_s > 0):
            raise OptionError(f"--timeout must be a positive number of seconds, got {self.timeout_s!r}")
        if not isinstance(self.device, str) or not self.device:
            raise OptionError(f"--device must name a device (auto, cpu, cuda, cuda:1, mps), got {self.device!r}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a one-line OptionError listing them."""
    if value not in choices:
        raise OptionError(f"{option} {value!r}: use one of {', '.join(choices)}")
    return value


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
