"""Shared helpers for benchmarks: run a command and sample the peak memory of its whole process tree."""
from __future__ import annotations

import subprocess
import threading
import time

import psutil


def run_measured(cmd: list[str], env=None, interval: float = 0.1) -> dict:
    """Run ``cmd``; return wall seconds, exit code, stderr tail and the peak of the summed RSS of the
    process and all its descendants (dask workers included), sampled every ``interval`` s."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, stderr = proc.communicate()
    stop.set()
    thread.join()
    return {"seconds": time.perf_counter() - started, "returncode": proc.returncode,
            "peak_rss_mb": peak / 2**20, "stderr": stderr.strip().splitlines()[-3:]}
