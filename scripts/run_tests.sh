#!/usr/bin/env bash
# The project's whole test suite: the library (in .venv) and the QGIS plugin (in Debian's QGIS
# Python, skipped with a message when QGIS is not installed).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
.venv/bin/python -m pytest -q "$@" tests || status=$?
if [ -f scripts/test_qgis.sh ]; then
    bash scripts/test_qgis.sh || status=$?
fi
exit $status
