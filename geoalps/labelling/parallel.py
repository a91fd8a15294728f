"""Running tile tasks: in-process for one worker, on dask.distributed otherwise.

Tasks are plain picklable records (:class:`geoalps.labelling.tile_work.TileTask`: a scene record
with its path, tile windows, the options), never open datasets, so they run in any worker process on any machine that sees the same files.
Results are yielded as they complete (``as_completed``); failed tasks are retried by dask and
then reported as :class:`TileFailure` instead of stopping the run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from geoalps.errors import DependencyError, GeoAlpsError, InputError, OptionError


def _unwrapped(exc: BaseException) -> str | None:
    """The message of a GeoAlpsError that dask handed back as ``Exception("InputError('...')")``
    (it does so when it cannot send the error itself, e.g. with its GDAL cause chained); None
    for anything else."""
    import ast
    import re

    from geoalps import errors

    if type(exc) is not Exception or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return None
    match = re.fullmatch(r"(\w+)\((.*)\)", exc.args[0].strip(), flags=re.S)
    kind = getattr(errors, match.group(1), None) if match else None
    if not (isinstance(kind, type) and issubclass(kind, GeoAlpsError)):
        return None
    try:
        message = ast.literal_eval(match.group(2))
    except (ValueError, SyntaxError):
        return None
    return message if isinstance(message, str) else None


@dataclass(frozen=True)
class TileFailure:
    """A task that kept failing: which one and the last error, on one line."""

    index: int
    message: str


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, GeoAlpsError):
        return str(exc)
    wrapped = _unwrapped(exc)
    if wrapped is not None:
        return wrapped
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return " ".join(last.split())


class TileRunner:
    """Context manager yielding ``(index, result | TileFailure)`` for each task, in completion order.

    ``workers=1`` and no ``scheduler``: run in this process (no dask overhead, engine loaded once).
    ``workers=N``: a LocalCluster of N single-threaded processes (GDAL and torch prefer processes);
    on a machine with several GPUs worker i's ``cuda`` is GPU i mod their number.
    ``scheduler="tcp://host:port"``: an existing dask cluster; its workers need geoalps installed
    and the scene paths readable.
    """

    def __init__(self, workers: int = 1, scheduler: str | None = None, retries: int = 2) -> None:
        self.workers = max(1, int(workers))
        self.scheduler = scheduler
        self.retries = retries
        self.client = None
        self.cluster = None
        self._config = contextlib.ExitStack()

    @property
    def distributed(self) -> bool:
        return self.scheduler is not None or self.workers > 1

    def __enter__(self) -> "TileRunner":
        if not self.distributed:
            return self
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise DependencyError("--workers/--scheduler need dask.distributed: pip install 'dask[distributed]'") from None
        try:
            if self.scheduler:
                self.client = Client(self.scheduler, timeout="20s")
            else:
                self._config.enter_context(_worker_environment())
                # dask's nanny copies its pre-spawn environment (OMP_NUM_THREADS=1 ...) into this
                # process's os.environ before starting each worker; close() puts it back, so a
                # notebook that imports torch after label() still gets all its threads.
                self._config.callback(_restore_environ, _environ_of(_pre_spawn_names()))
                with warnings.catch_warnings():  # "Port 8787 is already in use": another cluster's
                    warnings.filterwarnings("ignore", message="Port .* is already in use", category=UserWarning)
                    self.cluster = LocalCluster(
                        n_workers=self.workers, threads_per_worker=1, processes=True,
                        dashboard_address=None, silence_logs=logging.CRITICAL,  # failures: our own one line
                    )
                self.client = Client(self.cluster)
                # Forked workers inherit this process's BLAS/OpenMP pools (sized for all cores).
                from geoalps.labelling.dask_worker import EndWithParent, OneGpuPerWorker, SingleThreadedLibraries

                self.client.register_plugin(SingleThreadedLibraries())
                self.client.register_plugin(OneGpuPerWorker())  # worker i: GPU i mod GPUs
                self.client.register_plugin(EndWithParent())  # no orphans when this process is killed
        except (OSError, ValueError) as exc:  # ValueError: an address dask cannot parse
            self.close()
            from geoalps.inputs.remote import redact

            where = redact(self.scheduler) if self.scheduler else "local dask cluster"
            raise InputError(f"{where}: cannot connect ({redact(_one_line(exc))})") from None
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        self._config.close()

    def on_every_worker(self, fn: Callable[..., Any], *args) -> Any:
        """Run ``fn(*args)`` once in every worker process now (e.g. load the engine in all of them
        at once instead of inside each one's first tile); returns one worker's result."""
        if not self.distributed:
            return fn(*args)
        results = self.client.run(fn, *args)
        if not results:  # a cluster with no workers yet: wait for the first as a task
            return self.client.submit(fn, *args, pure=False).result()
        return next(iter(results.values()))

    def run(self, fn: Callable[[Any], Any], tasks: Sequence, keys: Sequence[str]) -> Iterator[tuple[int, Any]]:
        """Call ``fn(task)`` for every task; yield (task index, result or TileFailure)."""
        if not self.distributed:
            for index, task in enumerate(tasks):
                try:
                    yield index, fn(task)
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as exc:  # reported per tile; the run goes on
                    yield index, TileFailure(index, _one_line(exc))
            return
        from dask.distributed import as_completed

        futures = {}
        for index, (task, key) in enumerate(zip(tasks, keys)):
            future = self.client.submit(fn, task, key=key, retries=self.retries, pure=False)
            futures[future.key] = (index, future)
        try:
            for future in as_completed([f for _, f in futures.values()]):
                index = futures[future.key][0]
                try:
                    # A result lost with its worker before it was fetched is recomputed by the
                    # scheduler: result() waits for that instead of reporting a failure.
                    result = future.result()
                except Exception as exc:  # the task kept failing (retries used up)
                    yield index, TileFailure(index, _one_line(exc))
                else:
                    yield index, result
                future.release()
        finally:
            for _, future in futures.values():
                future.cancel()


START_METHODS = ("fork", "spawn", "forkserver")


def worker_start_method() -> str:
    """How local workers are started: ``fork`` on Linux, so a worker is ready in a fraction of a
    second instead of spending ~2 s of CPU re-importing Python, dask, numpy, GDAL and the engine
    (on 2 cores that was 2 s of wall time before the first tile). ``spawn`` when torch is
    already loaded here (its thread pools and CUDA state do not survive a fork) and off Linux.
    ``GEOALPS_DASK_START=spawn|fork|forkserver`` overrides."""
    chosen = os.environ.get("GEOALPS_DASK_START", "").strip().lower()
    if chosen:
        if chosen not in START_METHODS:
            raise OptionError(f"GEOALPS_DASK_START={chosen!r}: expected one of {', '.join(START_METHODS)}")
        return chosen
    if sys.platform.startswith("linux") and "torch" not in sys.modules:
        return "fork"
    return "spawn"


def _pre_spawn_names() -> list[str]:
    import dask

    return list(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})


def _environ_of(names: list[str]) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def _restore_environ(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _worker_environment():
    """Dask's worker environment minus ``MALLOC_TRIM_THRESHOLD_``: setting it turns off glibc's
    adaptive mmap threshold, so every tile-sized array is mapped and zero-filled afresh; that
    cost tiles about a fifth more time in workers than in-process. One thread per library stays.
    Also picks the start method (:func:`worker_start_method`)."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    if not os.environ.get("GEOALPS_DASK_MALLOC_TRIM"):
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return dask.config.set({"distributed.nanny.pre-spawn-environ": environ,
                            "distributed.worker.multiprocessing-method": worker_start_method()})

