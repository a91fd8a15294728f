# A stand-in system Python for the installer tests (the fixture prepends a #!/usr/bin/python3 line).
# It answers the installer's probe, makes a fake venv for `-m venv DIR` (with itself as bin/python
# and a fake bin/geoalps), and plays pip for `-m pip ...`. Behaviour from the environment:
#   FAKE_PY_VERSION  "3.11.2" (default) or e.g. "3.8.10"
#   FAKE_PY_IMPL     "CPython" (default)
#   FAKE_PIP_MODE    ok (default) | hang (prints a line, then sleeps) | fail (pip's error, exit 1)
#                    | buildfail (a source package's failed build, exit 1)
#   FAKE_PIP_ONLY_FOR a text: FAKE_PIP_MODE applies only to pip calls with an argument holding it
# Every call is appended to FAKE_PY_LOG when set: one JSON object a line with its argv, pid and
# the variables a build reads (SAM2_*, PIP_*) that it got.
import json
import os
import shutil
import sys
import time

args = sys.argv[1:]
log = os.environ.get("FAKE_PY_LOG")
if log:
    with open(log, "a") as handle:
        env = {k: v for k, v in os.environ.items() if k.startswith(("SAM2_", "PIP_"))}
        handle.write(json.dumps({"exe": sys.argv[0], "args": args, "pid": os.getpid(), "env": env}) + "\n")

if args[:2] == ["-I", "-c"]:
    version = [int(v) for v in os.environ.get("FAKE_PY_VERSION", "3.11.2").split(".")]
    print(json.dumps({"version": version, "implementation": os.environ.get("FAKE_PY_IMPL", "CPython"),
                      "executable": sys.argv[0], "prefix": "/fake", "base_prefix": "/fake", "venv": True}))
    sys.exit(0)

if args[:2] == ["-m", "venv"]:
    target = args[-1]
    os.makedirs(os.path.join(target, "bin"), exist_ok=True)
    with open(os.path.join(target, "pyvenv.cfg"), "w") as handle:
        handle.write("home = /fake\n")
    shutil.copy(sys.argv[0], os.path.join(target, "bin", "python"))
    geoalps = os.path.join(target, "bin", "geoalps")
    with open(geoalps, "w") as handle:
        handle.write("#!/bin/sh\necho 'geoalps, version 0.1.0'\n")
    os.chmod(geoalps, 0o755)
    print(f"created {target}")
    sys.exit(0)

if args[:2] == ["-m", "pip"]:
    mode = os.environ.get("FAKE_PIP_MODE", "ok")
    only_for = os.environ.get("FAKE_PIP_ONLY_FOR")
    if only_for and not any(only_for in arg for arg in args):
        mode = "ok"
    print("Collecting numpy", flush=True)
    if mode == "buildfail":
        print("  Building wheel for sam2 (pyproject.toml): finished with status 'error'", flush=True)
        print("ERROR: Failed building wheel for sam2", file=sys.stderr, flush=True)
        sys.exit(1)
    if mode == "hang":
        time.sleep(120)
    if mode == "fail":
        print("ERROR: No matching distribution found for torch", file=sys.stderr, flush=True)
        sys.exit(1)
    print("  Downloading numpy-2.4.0-cp311-cp311-manylinux_2_28_x86_64.whl (16.8 MB)", flush=True)
    print("Installing collected packages: numpy, geoalps", flush=True)
    print("Successfully installed geoalps-0.1.0 numpy-2.4.0", flush=True)
    sys.exit(0)

print(f"fake python: unexpected arguments {args}", file=sys.stderr)
sys.exit(2)
