"""Set-up that every local geoalps dask worker runs when it starts (a dask WorkerPlugin).

Kept apart from :mod:`geoalps.labelling.parallel` so one-worker runs never import dask.distributed.
"""
from __future__ import annotations

from distributed.diagnostics.plugin import WorkerPlugin


class SingleThreadedLibraries(WorkerPlugin):
    """One BLAS/OpenMP thread per worker process, also in workers the nanny restarts: a forked
    worker inherits this machine's thread pools sized for every core, and N workers x N threads
    oversubscribe the cores."""

    name = "geoalps-single-threaded"

    def setup(self, worker) -> None:
        from threadpoolctl import threadpool_limits

        self.limits = threadpool_limits(1)
