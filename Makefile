# Two entry points (see README): `make demo` runs the main job on the embedded default,
# `make test` runs the whole test suite. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: an unpinned torch (or one pulled in by a dependency) may
# fetch a multi-GB CUDA build. Override e.g. TORCH="torch" on a machine where that is wanted.
TORCH  ?= torch==2.13.0
OUT    ?= runs/demo

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/dynasearch demo --out $(OUT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
