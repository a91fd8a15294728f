"""The errors users see: one line naming the file (or option) and the problem, never a traceback.

Every error geoalps raises on purpose is a :class:`GeoAlpsError`; the subclasses say what kind of
thing went wrong, so a caller can catch the kind it means (``except geoalps.errors.InputError``)
and the CLI exits with each kind's ``exit_code`` (1 is left for internal errors, 130 for Ctrl-C).
Raise them as ``InputError(f"{path}: what is wrong")`` so the message can be printed verbatim.
"""
from __future__ import annotations


class GeoAlpsError(Exception):
    """A problem with the user's input, options or environment (exit code 2 unless a kind says)."""

    exit_code = 2

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class OptionError(GeoAlpsError, ValueError, exit_code=2):
    """A setting out of range, or settings that do not go together."""


class InputError(GeoAlpsError, exit_code=3):
    """An input (scene, truth, examples, URL) that is missing, unreadable or unusable."""


class OutputError(GeoAlpsError, exit_code=4):
    """An output that exists (without ``--overwrite``), or a folder that cannot be written."""


class ModelError(GeoAlpsError, exit_code=5):
    """A checkpoint or k-means model that is missing, damaged or does not fit this run."""


class DependencyError(GeoAlpsError, exit_code=6):
    """An optional package (torch, segment-anything, timm, ...) that this path needs is missing."""


class ResumeError(GeoAlpsError, exit_code=7):
    """A work folder that cannot be resumed (other inputs or settings) or that blocks a new run."""


class TileError(GeoAlpsError, exit_code=8):
    """Some tiles failed; the others finished and are kept for ``--resume``."""


class DownloadError(GeoAlpsError, exit_code=9):
    """A download that failed or whose checksum does not match."""


class BusyError(OutputError, exit_code=10):
    """An output or work folder in use by another run (its lock is held), or a GeoPackage open
    in another program; nothing was written, rerun when it is free."""


class DistributedError(GeoAlpsError, exit_code=11):
    """Data-parallel run: a process failed, died or waited past ``--timeout`` for the others.

    The command leaves at once after its line (``os._exit``), as every data-parallel process
    does (``geoalps.train.distributed.started``): the broken group's gloo threads can otherwise
    abort the interpreter's teardown and turn exit 11 into a crash (seen in CI)."""
