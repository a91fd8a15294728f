#!/usr/bin/env bash
# Fetch the wheels the GPU machine lacks (CPython 3.12, manylinux x86_64) and pack them into
# .gpu-wheels/wheels.tar.xz for the device tool (carry [".gpu-wheels"]); report the sizes against
# the tool's 64 MiB limit on what travels (working tree + carried paths).
#
#   bash benchmarks/gpu/fetch_wheels.sh                    # ~85 MB download, 3-6 min packing on 2 cores
#   WITH_DISTRIBUTED=1 bash benchmarks/gpu/fetch_wheels.sh # also dask.distributed (for --workers > 1)
#   EXTRA_WHEELS="xarray==2026.9.0" bash benchmarks/gpu/fetch_wheels.sh   # replace a package there
#   KEEP_RAW=1 ...                                         # keep the downloads in .gpu-wheels/raw
#                                                          # (delete them before a run: they'd travel)
#
# Left out because the GPU image has them (/work/.library/device/KINDS.md, "Python packages
# already there"): numpy, torch, torchvision, scipy, pandas, scikit-learn, scikit-image, xarray,
# timm, click, tqdm, joblib, threadpoolctl, requests, pillow, matplotlib, einops, attrs, certifi,
# pyparsing, packaging, cloudpickle, fsspec, toolz, pyyaml, and the rest of the dependencies
# below. Pins are the versions verified in this repository's venv (../shared/INSTALL.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-.venv/bin/python}
DEST=.gpu-wheels
LIMIT_MIB=64

# Missing there and needed by geoalps label / train / predict: the geo stack with its small
# pure-Python dependencies (rasterio: affine, cligj, click-plugins; dask: partd, locket).
WHEELS=(
  rasterio==1.4.4 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2
  pyogrio==0.13.0 shapely==2.2.0 pyproj==3.7.2 geopandas==1.2.0
  dask==2026.8.0 partd==1.4.2 locket==1.0.0
  segment-anything==1.0 torchgeo==0.8.1 rioxarray==0.19.0
)
# One-worker runs (all this check does) never import dask.distributed.
if [ "${WITH_DISTRIBUTED:-0}" = 1 ]; then
  WHEELS+=(distributed==2026.8.0 tornado==6.6.1 zict==3.0.0 tblib==3.2.2)
fi
# shellcheck disable=SC2206
[ -n "${EXTRA_WHEELS:-}" ] && WHEELS+=(${EXTRA_WHEELS})

rm -rf "$DEST"
mkdir -p "$DEST/raw"
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
echo "downloading ${#WHEELS[@]} wheels for CPython 3.12 manylinux x86_64 ..."
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST/raw" "${WHEELS[@]}" 2>&1 | { grep -v "is ignored: it is neither a file" || true; }

echo
echo "downloaded (largest first):"
ls -lS "$DEST/raw" | awk 'NR > 1 { printf "  %7.1f MiB  %s\n", $5 / 1048576, $9 }'
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
raw_bytes=$(du -cb "$DEST"/raw/*.whl | tail -1 | cut -f1)
echo "  $(mib "$raw_bytes") MiB  total as downloaded"

"$PYTHON" benchmarks/gpu/pack_wheels.py "$DEST/raw" "$DEST/wheels.tar.xz"
if [ "${KEEP_RAW:-0}" != 1 ]; then
  rm -rf "$DEST/raw"
fi

# What travels: tracked and untracked-not-ignored files, plus the carried .gpu-wheels.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk '/\ttotal$/ { s += $1 } END { print s + 0 }')
carried_bytes=$(du -sb "$DEST" | cut -f1)
total=$((tree_bytes + carried_bytes))
echo
echo "working tree $(mib "$tree_bytes") MiB + .gpu-wheels $(mib "$carried_bytes") MiB" \
  "= $(mib "$total") MiB of the device tool's $LIMIT_MIB MiB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "OVER THE LIMIT: drop WITH_DISTRIBUTED/EXTRA_WHEELS, or see benchmarks/gpu/README.md" >&2
  exit 1
fi
