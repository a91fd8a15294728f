"""Run one geoalps command as a child process, the way a Processing algorithm needs it.

Progress lines go to the progress bar, log lines to the log, cancel kills the whole process
group, and a cancelled or failed run leaves no output behind. The child has its own Python and
libraries (see settings.py), which is the point: nothing heavy is loaded inside QGIS.
"""
from __future__ import annotations

import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import IO, Callable

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from .progress import is_error_line, parse_progress, split_records
from .settings import child_environment, subprocess_flags

POLL_INTERVAL_S = 0.1
TERMINATE_GRACE_S = 5.0
GROUP_EXIT_WAIT_S = 2.0
LOG_TAIL_LINES = 12


class OutputGuard:
    """Removes what a run created or changed at the output paths if the run does not succeed.

    The CLI writes to a temp name and renames at the end, so normally nothing is there; this
    also catches a file renamed in just before the kill, and temp siblings left by a hard kill
    (``OUT.gpkg-journal``, ``OUT.gpkg.tmp``, ``.OUT.gpkg...``, ``OUT.<tmp>.gpkg``). A file that
    existed before the run and was not touched stays.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = [os.path.abspath(p) for p in paths if p]
        self._before = {entry: _mtime(entry) for entry in self._candidates()}

    def _candidates(self) -> set[str]:
        found: set[str] = set()
        for path in self.paths:
            folder, name = os.path.split(path)
            stem = os.path.splitext(name)[0]
            prefixes = (name, "." + name, stem + ".", "." + stem + ".")
            try:
                entries = os.listdir(folder)
            except OSError:
                continue
            found.update(
                os.path.join(folder, entry) for entry in entries if entry.startswith(prefixes)
            )
        return found

    def cleanup(self) -> list[str]:
        """Delete new or modified candidates; returns what was removed."""
        removed = []
        for entry in sorted(self._candidates()):
            if entry in self._before and _mtime(entry) == self._before[entry]:
                continue
            if _remove(entry):
                removed.append(entry)
        return removed


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _remove(path: str) -> bool:
    # Windows may hold a just-killed process's files for a moment.
    for _ in range(20):
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            time.sleep(0.1)
    return False


def _pump(stream: IO[bytes], name: str, lines: queue.Queue) -> None:
    """Reader thread: one queue item a line, then ``(name, None)`` at end of stream."""
    try:
        for raw in iter(stream.readline, b""):
            lines.put((name, raw))
    finally:
        lines.put((name, None))


def _terminate(proc: subprocess.Popen) -> None:
    """Stop the child and anything it started (dask workers, DataLoader processes)."""
    if proc.poll() is not None:
        return
    if sys.platform == "win32":
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(proc.pid)],
            capture_output=True,
            creationflags=subprocess_flags(),
        )
    else:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    if sys.platform != "win32":
        try:  # the group, even if the leader is gone: a worker may have ignored SIGTERM
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if sys.platform != "win32":
        _wait_group_gone(proc.pid, GROUP_EXIT_WAIT_S)


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Wait until no process of the group is left, so none writes after the cleanup.

    Signals are delivered asynchronously; a killed worker may live a few milliseconds more.
    Zombies still count as members until reaped, hence the bounded wait.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def format_command(command: list[str], extra_env: dict[str, str] | None = None) -> str:
    """``command`` as a shell would take it, after the variables ``extra_env`` sets for it."""
    if sys.platform == "win32":
        sets = "".join(f"set {name}={value}&& " for name, value in (extra_env or {}).items())
        return sets + subprocess.list2cmdline(command)
    sets = "".join(f"{name}={shlex.quote(value)} " for name, value in (extra_env or {}).items())
    return sets + shlex.join(command)


def run_geoalps(
    command: list[str], feedback: QgsProcessingFeedback | None, outputs: list[str],
    *, name: str = "geoalps", on_line: Callable[[str, str], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> None:
    """Run ``command`` to completion; raise QgsProcessingException on failure or cancel.

    ``outputs`` are the files the command will write; they are removed (with any temp
    siblings) when the run is cancelled or fails. Blocks the calling thread, which is the
    Processing task's thread in the desktop, and polls ``feedback.isCanceled()`` every 0.1 s.
    ``name`` is what messages call the program (``pip`` for the installer); ``on_line`` gets
    every log line as ``(stream, text)`` after it went to the log; ``extra_env`` is added to the
    child's (cleaned) environment.
    """
    feedback = feedback or QgsProcessingFeedback()
    guard = OutputGuard(outputs)
    feedback.pushCommandInfo(format_command(command, extra_env))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**child_environment(), **(extra_env or {})},
            start_new_session=sys.platform != "win32",
            creationflags=subprocess_flags(),
        )
    except OSError as exc:
        raise QgsProcessingException(f"GeoALPS: could not start {command[0]}: {exc}") from exc

    lines: queue.Queue = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", lines), daemon=True),
    ]
    for reader in readers:
        reader.start()

    error_line = ""
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    open_streams = len(readers)
    cancelled = False
    try:
        while open_streams or proc.poll() is None:
            if feedback.isCanceled():
                cancelled = True
                break
            try:
                stream, raw = lines.get(timeout=POLL_INTERVAL_S)
            except queue.Empty:
                continue
            if raw is None:
                open_streams -= 1
                continue
            for text in split_records(raw):
                progress = parse_progress(text) if stream == "stderr" else None
                if progress is not None:
                    feedback.setProgress(progress.percent)
                    if progress.message:
                        feedback.setProgressText(progress.message)
                    continue
                if stream == "stderr" and is_error_line(text):
                    error_line = text.strip()
                tail.append(text)
                feedback.pushConsoleInfo(text)
                if on_line is not None:
                    on_line(stream, text)
            # A progress callback may have cancelled: react before reading further lines.
            if feedback.isCanceled():
                cancelled = True
                break
    except BaseException:
        _terminate(proc)
        guard.cleanup()
        raise
    finally:
        if cancelled:
            _terminate(proc)
        for reader in readers:
            reader.join(timeout=TERMINATE_GRACE_S)
        for stream_handle in (proc.stdout, proc.stderr):
            if stream_handle is not None:
                stream_handle.close()

    if cancelled:
        removed = guard.cleanup()
        if removed:
            feedback.pushInfo("GeoALPS: removed unfinished output: " + ", ".join(removed))
        raise QgsProcessingException(
            f"GeoALPS: cancelled; the {name} process was stopped and no output was kept."
        )

    returncode = proc.wait()
    if returncode != 0:
        guard.cleanup()
        if error_line:
            raise QgsProcessingException(error_line)
        if returncode < 0:
            what = f"was killed by signal {-returncode}"
        else:
            what = f"failed with exit code {returncode}"
        last = "\n".join(list(tail)[-5:])
        raise QgsProcessingException(
            f"GeoALPS: {name} {what}." + (f" Its last output:\n{last}" if last else "")
        )
    feedback.setProgress(100.0)
    feedback.pushInfo(f"GeoALPS: {name} finished in {time.monotonic() - started:.1f} s.")
