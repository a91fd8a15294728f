"""geoalps.labelling.lock: one run at a time on an output, never a stale lock."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from geoalps.errors import BusyError, OutputError
from geoalps.labelling.lock import lock_path, run_lock

HOLD = r"""
import sys
from geoalps.labelling.lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    out = tmp_path / "out.gpkg"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BusyError, match=rf"^{out}: in use by process {holder.pid} \(another geoalps run\)"):
            with run_lock(out):
                pass
        assert BusyError.exit_code == 10 and issubclass(BusyError, OutputError)
    finally:
        holder.communicate("\n", timeout=60)
    with run_lock(out, tmp_path / "out.gpkg.geoalps-work"):  # free once the holder exited
        # read from another process: closing a descriptor of the file here would drop our lock
        assert subprocess.run(["cat", str(lock_path(out))], capture_output=True, text=True).stdout == str(os.getpid())
    assert not lock_path(out).exists()  # released and removed


def test_a_killed_holder_leaves_no_lock(tmp_path):
    out = tmp_path / "out.gpkg"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait(timeout=60)
    assert lock_path(out).exists()  # the file stays, the kernel's lock does not
    with run_lock(out):
        pass


HOLD_WITH_FORKED_CHILD = r"""
import os, sys, time
from geoalps.labelling.lock import run_lock
with run_lock(sys.argv[1]):
    child = os.fork()  # as dask's forked workers: the child inherits every open file
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    sys.stdin.readline()
"""


def test_workers_forked_by_a_killed_run_do_not_keep_its_lock(tmp_path):
    """kill -9 on a run leaves its forked dask workers running a while: the output must be free
    at once all the same (a flock, shared with the children, stayed held until they ended)."""
    out = tmp_path / "out.gpkg"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_WITH_FORKED_CHILD, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    child = int(holder.stdout.readline())
    try:
        holder.kill()
        holder.wait(timeout=60)
        os.kill(child, 0)  # the orphaned child is still alive
        with run_lock(out):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, 9)


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    out = tmp_path / "out.gpkg"
    with run_lock(out):
        with pytest.raises(BusyError, match="in use by this process"):
            with run_lock(out):
                pass
    with run_lock(out):  # released
        pass
