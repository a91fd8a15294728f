"""The geoalps CLI's machine-readable stderr lines (``--progress-lines``), parsed.

Contract: ``geoalps-progress: <percent 0-100> <free text>`` for progress, and on failure a last
line ``geoalps: error: <file>: <problem>``; every other line is a log line, among them
``label``'s closing summary (``... 9 tiles (0 all nodata, 3 resumed) in 4.4 s``). Pure stdlib, so
it is testable without QGIS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

PROGRESS_PREFIX = "geoalps-progress:"
ERROR_PREFIX = "geoalps: error:"

_TILES_SUMMARY = re.compile(r"\b(\d+) tiles \((\d+) all nodata, (\d+) resumed\)")
_PROGRESS = re.compile(r"^geoalps-progress:\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*)$")


@dataclass(frozen=True)
class Progress:
    percent: float
    message: str


def parse_progress(line: str) -> Progress | None:
    """A progress record, or None for any other line (a malformed one is treated as a log line)."""
    match = _PROGRESS.match(line.strip())
    if match is None:
        return None
    percent = min(100.0, max(0.0, float(match.group(1))))
    return Progress(percent, match.group(2).strip())


@dataclass(frozen=True)
class TileCounts:
    """What ``geoalps label``'s summary line says of the tiles: all, and those resumed."""

    tiles: int
    resumed: int


def parse_tile_counts(line: str) -> TileCounts | None:
    """The tile counts of ``geoalps label``'s summary line, or None for any other line."""
    match = _TILES_SUMMARY.search(line)
    if match is None or not line.startswith("geoalps: wrote "):
        return None
    return TileCounts(int(match.group(1)), int(match.group(3)))


def is_error_line(line: str) -> bool:
    return line.strip().startswith(ERROR_PREFIX)


def split_records(raw_line: bytes) -> list[str]:
    """The records in one ``\n``-terminated stderr line, as text.

    A progress bar (tqdm) redraws itself with ``\r`` and no newline, so a progress or error line
    printed meanwhile ends up glued to the bar's last redraw: keep only the final redraw, and
    split a ``geoalps-progress:``/``geoalps: error:`` record off whatever precedes it.
    """
    text = raw_line.decode("utf-8", errors="replace").rstrip("\r\n")
    parts = [part for part in text.split("\r") if part.strip()]
    if not parts:
        return []
    last = parts[-1].rstrip()
    for prefix in (PROGRESS_PREFIX, ERROR_PREFIX):
        at = last.find(prefix)
        if at > 0:
            before = last[:at].strip()
            return ([before] if before else []) + [last[at:]]
    return [last]
