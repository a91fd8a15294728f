"""geoalps.labelling.lock: one run at a time on an output, never a stale lock."""
from __future__ import annotations

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
        assert lock_path(out).read_text() == str(os.getpid())
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
