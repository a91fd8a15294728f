"""The errors users see: one line naming the file (or option) and the problem, never a traceback.

Every error geoalps raises on purpose is a :class:`GeoAlpsError`; the subclasses say what kind of
thing went wrong, so a caller can catch the kind it means (``except geoalps.errors.InputError``)
and the CLI can give each kind its own exit code (``exit_code``; 1 is left for internal errors).
Raise them as ``InputError(f"{path}: what is wrong")`` so the message can be printed verbatim.
"""
from __future__ import annotations


class GeoAlpsError(Exception):
    """A problem with the user's input, options or environment (base class; exit code 2)."""

    exit_code = 2


class OptionError(GeoAlpsError, ValueError):
    """A setting out of range, or settings that do not go together."""

    exit_code = 2


class InputError(GeoAlpsError):
    """An input (scene, truth, examples, URL) that is missing, unreadable or unusable."""

    exit_code = 3


class OutputError(GeoAlpsError):
    """An output that exists (without ``--overwrite``), or a folder that cannot be written."""

    exit_code = 4


class ModelError(GeoAlpsError):
    """A checkpoint or k-means model that is missing, damaged or does not fit this run."""

    exit_code = 5


class DependencyError(GeoAlpsError):
    """An optional package (torch, segment-anything, timm, ...) that this path needs is missing."""

    exit_code = 6


class ResumeError(GeoAlpsError):
    """A work folder that cannot be resumed (other inputs or settings) or that blocks a new run."""

    exit_code = 7


class TileError(GeoAlpsError):
    """Some tiles failed; the others finished and are kept for ``--resume``."""

    exit_code = 8


class DownloadError(GeoAlpsError):
    """A download that failed or whose checksum does not match."""

    exit_code = 9
