"""Set-up that every local geoalps dask worker runs when it starts (a dask WorkerPlugin).

Kept apart from :mod:`geoalps.labelling.parallel` so one-worker runs never import dask.distributed.
"""
from __future__ import annotations

import os
import threading
import time

from distributed.diagnostics.plugin import WorkerPlugin

#: How often a local worker checks that the process that started it is still there, in seconds.
PARENT_CHECK_S = 1.0


class SingleThreadedLibraries(WorkerPlugin):
    """One BLAS/OpenMP thread per worker process, also in workers the nanny restarts: a forked
    worker inherits this machine's thread pools sized for every core, and N workers x N threads
    oversubscribe the cores."""

    name = "geoalps-single-threaded"

    def setup(self, worker) -> None:
        from threadpoolctl import threadpool_limits

        self.limits = threadpool_limits(1)


class OneGpuPerWorker(WorkerPlugin):
    """Local worker i runs its CUDA work on GPU i mod (visible GPUs): ``--workers N --device
    cuda`` on a machine with several GPUs uses all of them instead of stacking N engines on GPU 0.
    Decided once, when the worker starts (a worker the nanny restarts keeps its name, so its GPU);
    costs nothing here: torch is not imported, :func:`geoalps.devices.resolve_device` reads the
    worker's slot when the engine asks for ``cuda``. One GPU, CPU or ``cuda:1``: unchanged."""

    name = "geoalps-one-gpu-per-worker"

    def setup(self, worker) -> None:
        from geoalps.devices import set_worker_slot

        set_worker_slot(worker_slot(worker.name))


class EndWithParent(WorkerPlugin):
    """A local worker ends within :data:`PARENT_CHECK_S` of the process that started it (the
    geoalps run) being killed (``kill -9``, the OOM killer), instead of living on as an orphan
    that holds the run's terminal, pipes and memory. dask's own guard, a pipe the parent keeps
    open, fails for forked workers: a worker forked while another worker's pipe is open inherits
    its write end, so two workers can keep each other alive (2 workers left running 3 s after
    the kill in 37 of 60 starts of a plain LocalCluster here, 0 of 60 with this plugin; in CI a
    killed run's workers held its pipes past 300 s). Costs one thread a worker, waking once a second."""

    name = "geoalps-end-with-parent"

    def setup(self, worker) -> None:
        watch = threading.Thread(target=_end_when_orphaned, args=(os.getppid(),), daemon=True,
                                 name="geoalps-end-with-parent")
        watch.start()


def _end_when_orphaned(parent_pid: int) -> None:
    """Exit this process at once when its parent is no longer ``parent_pid`` (it died, and the
    process was handed to init or a subreaper)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_S)
    os._exit(1)


def worker_slot(name) -> int | None:
    """A LocalCluster worker's slot from its name (dask names them 0..N-1); None for a name that
    is no whole number (a worker some other cluster named), which then keeps torch's default."""
    try:
        slot = int(name)
    except (TypeError, ValueError):
        return None
    return slot if slot >= 0 else None
