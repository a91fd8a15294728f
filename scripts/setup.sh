#!/usr/bin/env bash
# Create .venv and install geoalps with everything (SAM, training, tests). torch/torchvision are
# pinned by constraints.txt: without it pip downloads multi-GB CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# sam2 (in the extras) is a source package whose isolated build needs torch: PIP_CONSTRAINT reaches
# that build environment (-c does not), so it builds against the pinned torch instead of fetching
# another; SAM2_BUILD_CUDA=0 skips its optional CUDA extension (one CUDA post-processing step).
export SAM2_BUILD_CUDA=0
export PIP_CONSTRAINT="$(pwd)/constraints.txt"
.venv/bin/python -m pip install -q -e ".[dev]" -c constraints.txt
echo "geoalps installed in $(pwd)/.venv: try .venv/bin/geoalps label --help" >&2
