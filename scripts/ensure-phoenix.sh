#!/usr/bin/env bash
# Arize Phoenix in .venv-phoenix: the OpenTelemetry receiver tests/unit/test_telemetry.py
# sends a query's spans to, and reads them back from. Its own venv: its dependencies are
# many and pinned apart from shesha's. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=20.26.1
PY=${PYTHON:-python3}
if .venv-phoenix/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('arize-phoenix') != '$VERSION')" 2>/dev/null; then
  exit 0
fi
echo "ensure-phoenix: installing arize-phoenix $VERSION into .venv-phoenix (one time)..."
"$PY" -m venv .venv-phoenix
.venv-phoenix/bin/python -m pip install -q --upgrade pip
.venv-phoenix/bin/python -m pip install -q "arize-phoenix==$VERSION"
echo "ensure-phoenix: .venv-phoenix/bin/phoenix is installed."
