"""Small helpers shared by the plugin tests."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from qgis.core import QgsProcessingFeedback


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what the algorithm reported; optionally cancels at the first progress update, or at
    the first progress text containing ``cancel_on_text`` (e.g. ``"tile 1/"``)."""

    def __init__(self, cancel_on_progress: bool = False, cancel_on_text: str = "") -> None:
        super().__init__()
        self.cancel_on_progress = cancel_on_progress
        self.cancel_on_text = cancel_on_text
        self.progress: list[float] = []
        self.texts: list[str] = []
        self.console: list[str] = []
        self.commands: list[str] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.errors: list[str] = []
        self.cancelled_at: float | None = None  # time.monotonic() of the cancel

    def setProgress(self, progress: float) -> None:  # noqa: N802
        self.progress.append(progress)
        super().setProgress(progress)
        if self.cancel_on_progress and self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
            self.cancel()

    def setProgressText(self, text: str) -> None:  # noqa: N802
        self.texts.append(text)
        super().setProgressText(text)
        if self.cancel_on_text and self.cancel_on_text in text and self.cancelled_at is None:
            self.cancel_now()

    def cancel_now(self) -> None:
        """Cancel, noting when (for timing how long the run takes to stop)."""
        self.cancelled_at = time.monotonic()
        self.cancel()

    def pushConsoleInfo(self, info: str) -> None:  # noqa: N802
        self.console.append(info)
        super().pushConsoleInfo(info)

    def pushCommandInfo(self, info: str) -> None:  # noqa: N802
        self.commands.append(info)
        super().pushCommandInfo(info)

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.infos.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.warnings.append(warning)
        super().pushWarning(warning)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802,N803
        self.errors.append(error)
        super().reportError(error, fatalError)


def read_record(fake_cli: Path) -> dict:
    return json.loads((fake_cli.parent / "record.json").read_text())


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def live_group_members(pgid: int) -> list[int]:
    """Pids of the process group ``pgid`` that still run (zombies do not; Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def read_calls(fake_cli: Path) -> list[list[str]]:
    """The argv of every call of the fake CLI, in order."""
    lines = (fake_cli.parent / "calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and not process_gone(int(entry)):
            found.append(int(entry))
    return found
