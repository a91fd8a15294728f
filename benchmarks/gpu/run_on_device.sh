#!/usr/bin/env bash
# The one command for the device tool (see README.md): install the carried wheels, run the GPU
# check, leave the report in $OUT/gpu_report.json (and the logs beside it).
#
#   bash benchmarks/gpu/run_on_device.sh            # the full check on cuda, under 8 minutes
#   bash benchmarks/gpu/run_on_device.sh --quick    # any extra arguments go to check.py
#
# Needs .gpu-wheels/ from benchmarks/gpu/fetch_wheels.sh (carried: it is git-ignored). Installs
# into /tmp/gpu-site with --no-deps (the image's own numpy/torch/... stay), puts the repository on
# PYTHONPATH (no build step, nothing fetched), checks the imports, then runs check.py.
set -uo pipefail
cd "$(dirname "$0")/../.."

OUT=${OUT:-/tmp/gpu-check-out}
PY=${PYTHON:-python3}
SITE=/tmp/gpu-site
CHECK_TIMEOUT_S=${CHECK_TIMEOUT_S:-480}
mkdir -p "$OUT"
exec 2> >(tee -a "$OUT/gpu_check.log" >&2)
started=$(date +%s)
say() { echo "[run_on_device $(date +%H:%M:%S)] $*" >&2; }

# 1. wheels: the packed archive from fetch_wheels.sh, else loose wheels in .gpu-wheels/.
WHEELS=.gpu-wheels
if [ -f .gpu-wheels/wheels.tar.xz ]; then
  WHEELS=/tmp/gpu-wheels
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  # Python's tarfile: needs no xz binary on the image.
  "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' \
    .gpu-wheels/wheels.tar.xz "$WHEELS" || { say "cannot unpack .gpu-wheels/wheels.tar.xz"; exit 3; }
fi
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  say "no wheels: run benchmarks/gpu/fetch_wheels.sh here and carry [\".gpu-wheels\"]"
  exit 3
fi
say "installing ${#wheels[@]} wheels into $SITE"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  --find-links "$WHEELS" "${wheels[@]}" >&2 || { say "pip install failed"; exit 3; }
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 2. imports and versions, one line each: a missing or clashing package shows here, not mid-run.
"$PY" - >&2 <<'EOF' || { say "imports failed: see above"; exit 4; }
import importlib, sys
bad = 0
for name in ("numpy", "torch", "torchvision", "rasterio", "pyogrio", "shapely", "pyproj", "geopandas",
             "dask", "xarray", "rioxarray", "sklearn", "skimage", "scipy", "pandas", "timm",
             "segment_anything", "torchgeo.datasets", "torchgeo.samplers", "click", "tqdm", "geoalps.cli"):
    try:
        module = importlib.import_module(name)
        version = getattr(module, "__version__", "") if name != "click" else ""
        print(f"  {name:20s} {version}  {getattr(module, '__file__', '')}")
    except Exception as exc:
        bad += 1
        print(f"  {name:20s} FAILED: {type(exc).__name__}: {exc}")
import torch
print(f"  cuda available: {torch.cuda.is_available()}, devices: {torch.cuda.device_count()}")
sys.exit(1 if bad else 0)
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version \
  --format=csv,noheader >&2
say "setup took $(( $(date +%s) - started )) s; running check.py $*"

# 3. the check: JSON on stdout (and in $OUT after every section, so a timeout still leaves one).
rm -rf /tmp/gpu-check-work
PYTHONUNBUFFERED=1 timeout "$CHECK_TIMEOUT_S" "$PY" benchmarks/gpu/check.py --out "$OUT/gpu_report.json" \
  --work /tmp/gpu-check-work "$@"
rc=$?
[ $rc -eq 124 ] && say "check.py ran past ${CHECK_TIMEOUT_S} s; $OUT/gpu_report.json has the sections that finished"
# The runs' logs (stderr of each geoalps command), small: one file back.
(cd /tmp/gpu-check-work 2>/dev/null && find . -name '*.stderr.txt' -print0 | tar -czf "$OUT/runs_logs.tar.gz" --null -T -) || true
say "done in $(( $(date +%s) - started )) s, exit $rc"
exit $rc
