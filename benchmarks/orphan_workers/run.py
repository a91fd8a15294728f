"""Do a killed run's local dask workers outlive it? (``geoalps.labelling.dask_worker.EndWithParent``)

Each round starts a LocalCluster of 2 forked single-threaded workers in a child process (as
``geoalps label`` does on 2 cores), SIGKILLs the child once the workers are up, waits 3 s and
counts the rounds in which a worker is still running (a row in ``results.jsonl``). ``--plugin`` registers geoalps's
EndWithParent plugin, as geoalps's TileRunner does.

    .venv/bin/python benchmarks/orphan_workers/run.py --rounds 60
    .venv/bin/python benchmarks/orphan_workers/run.py --rounds 60 --plugin
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from _measure import append_rows  # noqa: E402 - benchmarks/ is not a package
CHILD = r'''
import logging, sys
import dask
from dask.distributed import Client, LocalCluster
with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.CRITICAL)
    client = Client(cluster)
    if sys.argv[2] == "plugin":
        sys.path.insert(0, sys.argv[1])
        from geoalps.labelling.dask_worker import EndWithParent
        client.register_plugin(EndWithParent())
    print("up", flush=True)
    import time
    time.sleep(600)
'''


def _running(process: psutil.Process) -> bool:
    """Running and not a zombie; a process gone between the two questions has ended."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--plugin", action="store_true", help="register EndWithParent on the workers")
    parser.add_argument("--wait-s", type=float, default=3.0, help="seconds after the kill before counting")
    args = parser.parse_args()
    lingered = 0
    for _ in range(args.rounds):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), "plugin" if args.plugin else "plain"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert child.stdout.readline().strip() == "up"
        workers = psutil.Process(child.pid).children(recursive=True)
        child.kill()
        child.wait()
        time.sleep(args.wait_s)
        alive = [w for w in workers if _running(w)]
        lingered += bool(alive)
        for w in alive:
            w.kill()
    append_rows(HERE / "results.jsonl", [{"rounds": args.rounds, "rounds_with_a_worker_left": lingered,
                                          "plugin": args.plugin, "wait_s": args.wait_s}])
    print(f"{lingered} of {args.rounds} rounds left a worker running {args.wait_s:g} s after the kill "
          f"({'with' if args.plugin else 'without'} EndWithParent); row in {HERE / 'results.jsonl'}")


if __name__ == "__main__":
    main()
