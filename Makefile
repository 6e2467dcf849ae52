# rntflow: two commands on a fresh machine.
#   make demo   simulate the demo trial, ingest it over DICOM, run the flows, fill the warehouse
#   make test   the whole test suite: lint, import contract, unit and end-to-end tests
#   make check  the fast tier: lint, import contract, tests not marked slow (< 2 min)
# Both create the virtualenv, install the package and the Debian tools they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SYSPKGS := dcmtk dicom3tools orthanc postgresql
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_TELEMETRY_ENABLED := false
export PREFECT_LOGGING_LEVEL := WARNING
export DO_NOT_TRACK := 1

.PHONY: all demo demo-crosscal test check lint format sysdeps venv bench clean distclean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,analyst]'
	touch $@

venv: $(STAMP)

# Debian tools: dcmtk (storescu/storescp), dicom3tools (dciodvfy), orthanc (a real PACS),
# postgresql (Prefect's production database, in the scale-out test).
sysdeps:
	@if ! command -v storescu >/dev/null || ! command -v dciodvfy >/dev/null || ! [ -x /usr/sbin/Orthanc ] \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing Debian packages: $(SYSPKGS)"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(SYSPKGS); \
	fi

# Lint (ruff) and the import contract (tests/architecture: layers point one way, no cycle).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tests/architecture/importgraph.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The fast tier on two pytest-xdist workers (91 s on this 2-core machine when quiet; 147 s on one).
check: lint
	$(BIN)/pytest -q -n 2 -m "not slow"

test: lint sysdeps
	$(BIN)/pytest -q

demo: $(STAMP) sysdeps
	$(BIN)/rntflow demo --config deployments/trial.example.yaml --fresh

# After `make demo`: re-process the vendor-quantified site without cross-calibration and
# compare the dose-effect fits (reports in data/warehouse/reports/cross_calibration*.md).
demo-crosscal: $(STAMP)
	$(BIN)/rntflow cross-calibration-effect --config deployments/trial.example.yaml

bench: $(STAMP) sysdeps
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf data demo-out .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info
