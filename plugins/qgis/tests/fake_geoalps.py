"""A stand-in for the geoalps CLI, for testing the plugin's subprocess plumbing.

conftest.py copies it next to a shebang line into a temp folder. FAKE_GEOALPS_MODE picks:
ok (progress, logs, outputs), glued (a progress line glued to a progress-bar redraw),
fail (an error line, exit 2), crash (no error line, exit 3), slow (one progress line, a temp
file beside the output, a grandchild process, then a long sleep), silent (a grandchild, then
30 s without a line; with FAKE_GEOALPS_IGNORE_TERM=1 both ignore SIGTERM), resume_refused
(``--resume`` gets geoalps's refusal, exit 7; without it as ok), notgeoalps (--version lies).
Every call's argv is also appended to ``calls.jsonl`` beside the script.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

args = sys.argv[1:]
mode = os.environ.get("FAKE_GEOALPS_MODE", "ok")
here = os.path.dirname(os.path.abspath(__file__))

if args == ["--version"]:
    print("something else 1.0" if mode == "notgeoalps" else "geoalps, version 0.0-fake")
    sys.exit(0)


def progress(percent, message):
    print(f"geoalps-progress: {percent} {message}", file=sys.stderr, flush=True)


def log(line):
    print(line, file=sys.stderr, flush=True)


def value(flag):
    return args[args.index(flag) + 1] if flag in args else None


outputs = [p for p in (value("-o"), value("--raster-out"), value("--polygons"), value("--figure")) if p]
# JSON outputs (evaluate --json, classes name --report) get JSON the plugin reads back.
json_outputs = {
    value("--json"): {"many_to_one_miou": 0.5, "pixel_accuracy": 0.75, "hungarian_miou": 0.25, "nmi": None,
                      "purity": 0.8, "object_recall": {"recall": 0.125}},
    value("--report"): {"classes": [{"pseudo_class": 0, "name": "water", "named": True, "votes": {"water": 2.0},
                                     "conflict": False},
                                    {"pseudo_class": 1, "name": "class 1", "named": False, "votes": {},
                                     "conflict": False}],
                        "merged_names": ["water", "class 1"], "unused_examples": [3], "n_examples": 2},
}
record = {
    "argv": args,
    "pid": os.getpid(),
    "env": {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "GDAL_", "PROJ_"))},
}


def save_record():
    with open(os.path.join(here, "record.json"), "w") as handle:
        json.dump(record, handle)


with open(os.path.join(here, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps(args) + "\n")
# geoalps label keeps finished tiles in OUTPUT.geoalps-work until it completes
work = value("-o") + ".geoalps-work" if args[:1] == ["label"] else None
if work:
    os.makedirs(os.path.join(work, "tiles"), exist_ok=True)

if mode == "silent":
    if os.environ.get("FAKE_GEOALPS_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild through exec
    sleeper = subprocess.Popen(["sleep", "300"])
    record["grandchild"] = sleeper.pid
    save_record()
    time.sleep(30)
    sys.exit(0)

if mode == "slow":
    sleeper = subprocess.Popen(["sleep", "300"])
    record["grandchild"] = sleeper.pid
    folder, name = os.path.split(os.path.abspath(outputs[0]))
    stem, suffix = os.path.splitext(name)
    temp = os.path.join(folder, f".{stem}.x1y2.tmp{suffix}")
    with open(temp, "wb") as handle:
        handle.write(b"half")
    record["temp"] = temp
    save_record()
    progress(5.0, "tile 1/100")
    time.sleep(300)
    sys.exit(0)

save_record()
log("geoalps: engine classical")
if mode == "fail":
    progress(10, "tile 1/10")
    log("some traceback-free log line")
    log("geoalps: error: /data/scene.tif: not a raster GDAL can read")
    sys.exit(2)
if mode == "crash":
    log("Segmentation fault (pretend)")
    sys.exit(3)
if mode == "signal":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "resume_refused" and "--resume" in args:
    log(f"geoalps: error: {value('-o')}.geoalps-work: work folder was made with other settings (classes); "
        "run without --resume and with --overwrite to start over")
    sys.exit(7)

progress(0.0, "starting")
progress(50, "tile 1/2 scene.tif s0_r0_c0: 12 objects")
if mode == "glued":
    sys.stderr.write("labelling:  50%|#####     | 1/2\rlabelling: 100%|##########| 2/2")
    sys.stderr.flush()
    progress(99.5, "glued to a bar")
log("a log line")
print("a stdout line", flush=True)
for path in outputs:
    with open(path, "wb") as handle:
        handle.write(b"fake output")
for path, content in json_outputs.items():
    if path:
        with open(path, "w") as handle:
            json.dump(content, handle)
progress(100.0, "done: 12 objects")
if work:
    shutil.rmtree(work)
    resumed = 1 if "--resume" in args else 0
    log(f"geoalps: wrote {value('-o')}: 12 polygons, 2 pseudo-classes, 2 tiles (0 all nodata, {resumed} resumed) "
        "in 0.1 s")
