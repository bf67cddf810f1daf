# The two set-up commands: `make demo` and `make test`. Both create .venv when missing and
# install only when pyproject.toml changed, so a second run starts at once; pip's wheel cache
# keeps a fresh clone from compiling llama.cpp again.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.rune-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-slow install lint typecheck pytest clean

demo: $(STAMP)
	$(VENV)/bin/rune demo

# The default suite leaves out tests marked `slow` (real training to quality, hundreds of
# crash points, end-to-end benchmark runs); `make test-slow` runs them.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -m "not slow"

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow

install: $(STAMP)

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first: its CPU build lies on this machine's disk; an unpinned torch pulls a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,bench]'
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -m "not slow"

clean:
	rm -rf $(VENV) .test-cache .pytest_cache .mypy_cache .ruff_cache
