"""Run one geoalps command as a child process, the way a Processing algorithm needs it.

Progress lines go to the progress bar, log lines to the log, cancel kills the whole process
group within about a second whatever the child is doing (printing or not), and a cancelled or
failed run leaves no output behind (only what the caller asks to keep, such as the work folder a
resume continues from). The child has its own Python and libraries (see settings.py), which is
the point: nothing heavy is loaded inside QGIS.
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
from dataclasses import dataclass
from typing import IO, Callable

from qgis.core import QgsProcessingException, QgsProcessingFeedback
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, QThread

from .progress import is_error_line, parse_progress, split_records
from .settings import child_environment, subprocess_flags

#: How often cancel is checked, with or without output from the child.
POLL_INTERVAL_S = 0.1
#: SIGTERM to SIGKILL: the CLI keeps nothing in memory worth saving (finished tiles are already
#: on disk), so the grace is short; cancel must finish within 2 s whatever the child is doing.
TERMINATE_GRACE_S = 0.8
#: After SIGKILL: until the last member of the group has gone (signals arrive asynchronously).
GROUP_EXIT_WAIT_S = 0.5
#: The reader threads end when the group has gone; one a grandchild outside it keeps reading is
#: left behind (it is a daemon thread) rather than waited for.
READER_JOIN_S = 0.5
LOG_TAIL_LINES = 12


@dataclass(frozen=True)
class ChildExit:
    """How the child ended, when it succeeded or failed in a way the caller said it handles
    (``accept_exit_codes``, e.g. a refused ``--resume``): its exit code and error line."""

    returncode: int
    error_line: str = ""


class OutputGuard:
    """Removes what a run created or changed at the output paths if the run does not succeed.

    The CLI writes to a temp name and renames at the end, so normally nothing is there; this
    also catches a file renamed in just before the kill, and temp siblings left by a hard kill
    (``OUT.gpkg-journal``, ``OUT.gpkg.tmp``, ``.OUT.gpkg...``, ``OUT.<tmp>.gpkg``). A file that
    existed before the run and was not touched stays, and so does whatever is at a ``keep`` path
    (the work folder of finished tiles that a resume continues from).
    """

    def __init__(self, paths: list[str], keep: tuple[str, ...] = ()) -> None:
        self.paths = [os.path.abspath(p) for p in paths if p]
        self.keep = {os.path.abspath(p) for p in keep if p}
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
        return found - self.keep

    def kept(self) -> list[str]:
        """What the run left at the ``keep`` paths (they exist), for the log."""
        return sorted(path for path in self.keep if os.path.exists(path))

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
    """Stop the child and anything it started (dask workers, DataLoader processes), in at most
    about ``TERMINATE_GRACE_S + GROUP_EXIT_WAIT_S``: SIGTERM to the group, SIGKILL to whatever
    of it is left after the grace (a member that ignores or handles SIGTERM slowly)."""
    if sys.platform == "win32":
        if proc.poll() is None:  # /F: there is no gentle way that reaches the whole tree
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(proc.pid)],
                capture_output=True,
                creationflags=subprocess_flags(),
            )
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        return
    # The group, even if the leader is gone: a worker may outlive it.
    _signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + TERMINATE_GRACE_S
    while True:
        proc.poll()  # reaps the leader, which otherwise stays a member as a zombie
        if not _group_alive(proc.pid):
            break
        if time.monotonic() >= deadline:
            _signal_group(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    _wait_group_gone(proc.pid, GROUP_EXIT_WAIT_S)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. On Linux, zombies do not count: a worker whose
    parent was killed waits for init to reap it, which a container's init may never do."""
    if os.path.isdir("/proc/self"):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Wait until no process of the group is left, so none writes after the cleanup.

    Signals are delivered asynchronously; a killed worker may live a few milliseconds more.
    """
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _process_events() -> None:
    """Let the main thread's event loop run, when this is the main thread.

    ``qgis_process`` runs the algorithm in its main thread and turns Ctrl+C (SIGINT) into
    ``feedback.cancel()`` through a Qt socket notifier, which only fires while events are
    processed (its own feedback does that at most every 2 s, and only when progress changes).
    Without this a cancel waits for the child's next progress line. In the desktop the algorithm
    runs in a task thread and the GUI cancels directly: nothing to do there.
    """
    app = QCoreApplication.instance()
    if app is not None and QThread.currentThread() == app.thread():
        QCoreApplication.processEvents(QEventLoop.ExcludeUserInputEvents)


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
    extra_env: dict[str, str] | None = None, keep: tuple[str, ...] = (),
    accept_exit_codes: tuple[int, ...] = (),
) -> ChildExit:
    """Run ``command`` to completion; raise QgsProcessingException on failure or cancel, except
    for a failure with one of ``accept_exit_codes``, which is returned as with success.

    (A subclass of QgsProcessingException would carry the exit code too, but QGIS 3.22 logs a
    traceback for any exception that is not exactly QgsProcessingException.)

    ``outputs`` are the files the command will write; they are removed (with any temp
    siblings) when the run is cancelled or fails, except the ``keep`` paths (a work folder to
    resume from). Blocks the calling thread, which is the Processing task's thread in the
    desktop and the main thread in ``qgis_process``, and checks ``feedback.isCanceled()`` every
    0.1 s whether or not the child prints anything; a cancel stops the child's whole process
    group within about 1.5 s. ``name`` is what messages call the program (``pip`` for the
    installer); ``on_line`` gets every log line as ``(stream, text)`` after it went to the log;
    ``extra_env`` is added to the child's (cleaned) environment.
    """
    feedback = feedback or QgsProcessingFeedback()
    guard = OutputGuard(outputs, keep)
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
    events_at = time.monotonic()
    try:
        while open_streams or proc.poll() is None:
            if time.monotonic() - events_at >= POLL_INTERVAL_S:
                _process_events()  # a qgis_process Ctrl+C arrives as an event
                events_at = time.monotonic()
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
            reader.join(timeout=READER_JOIN_S)
        if not any(reader.is_alive() for reader in readers):  # closing under a reading thread blocks
            for stream_handle in (proc.stdout, proc.stderr):
                if stream_handle is not None:
                    stream_handle.close()

    if cancelled:
        removed = guard.cleanup()
        if removed:
            feedback.pushInfo("GeoALPS: removed unfinished output: " + ", ".join(removed))
        raise QgsProcessingException(
            f"GeoALPS: cancelled; the {name} process was stopped and no output was kept"
            + _kept_note(guard) + "."
        )

    returncode = proc.wait()
    if returncode != 0:
        guard.cleanup()
        if returncode in accept_exit_codes:
            return ChildExit(returncode, error_line)
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
    return ChildExit(0)


def _kept_note(guard: OutputGuard) -> str:
    kept = guard.kept()
    return f" (its work folder {', '.join(kept)} is kept, to resume from)" if kept else ""
