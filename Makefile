# Two commands do all the set-up: `make run` and `make test`. Both are safe to repeat: nothing is
# reinstalled unless pyproject.toml changed, and models/embeddings are cached under var/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Debian packages read at run time, by the tests and by the benchmarks (scripts/apt-ensure.sh installs the
# missing ones): espeak-ng speaks answers; ffmpeg and chromium drive the media and browser tests; opencv-doc
# ships the real photos of the face-redaction fixture (messi5.jpg), opencv-data the LBP face cascades the
# detector tests and `bench redact` compare, fonts-dejavu-core the fonts `bench redact-text` and the reading tests
# render their text in, fonts-wqy-zenhei the CJK font the Chinese reading test renders.
APT_RUN := espeak-ng
APT_BENCH := $(APT_RUN) opencv-doc opencv-data fonts-dejavu-core
APT_TEST := $(APT_BENCH) ffmpeg chromium fonts-wqy-zenhei

.PHONY: run test install install-dev lint typecheck bench clean

run: install
	@scripts/apt-ensure.sh $(APT_RUN)
	$(BIN)/lookloop serve

# The layer contracts (import-linter), ruff and mypy run first: a broken layer fails the build in a minute.
test: install-dev
	@scripts/apt-ensure.sh $(APT_TEST)
	$(BIN)/lint-imports --no-logo
	$(BIN)/ruff check src tests
	$(BIN)/mypy --strict src/lookloop
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build on disk; a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	@touch $@

install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

lint: install-dev
	$(BIN)/ruff check src tests
	$(BIN)/mypy --strict src/lookloop
	$(BIN)/lint-imports --no-logo

bench: install
	@scripts/apt-ensure.sh $(APT_BENCH)
	$(BIN)/lookloop bench latency --json var/bench/latency.json

clean:
	rm -rf $(VENV) var
