#!/usr/bin/env bash
# Run the QGIS plugin tests (plugins/qgis/tests) under Debian's PyQGIS, headless.
# Skips (exit 0) when QGIS is not installed; creates .venv-qgis (system site-packages + pytest).
# Extra arguments go to pytest, e.g. scripts/test_qgis.sh -m "not slow" or -k cancel.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/qgis_process.bin ] || ! /usr/bin/python3 -c "import qgis" 2>/dev/null; then
    echo "QGIS not installed: skipping QGIS tests"
    exit 0
fi

if [ ! -x .venv-qgis/bin/python ]; then
    /usr/bin/python3 -m venv --system-site-packages .venv-qgis
fi
if ! .venv-qgis/bin/python -c "import pytest, pytest_timeout" 2>/dev/null; then
    .venv-qgis/bin/python -m pip install --quiet pytest pytest-timeout
fi

export QT_QPA_PLATFORM=offscreen
exec .venv-qgis/bin/python -m pytest plugins/qgis/tests -q "$@"
