# Two commands on a fresh machine: `make run` (the main job on the embedded default) and
# `make test` (the whole suite). Both create .venv and install the project into it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.autopsy-installed
AUTOPSY_HOME := $(CURDIR)/.autopsy
export DAGSTER_HOME := $(AUTOPSY_HOME)/dagster_home
export MLFLOW_TRACKING_URI ?= sqlite:///$(AUTOPSY_HOME)/mlflow.db
export AUTOPSY_HOME

.PHONY: run test ui mlflow-ui bench instance clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

# DAGSTER_HOME must be absolute and exist; Dagster reads only $DAGSTER_HOME/dagster.yaml.
instance:
	@mkdir -p $(DAGSTER_HOME)
	@if [[ -n "$${AUTOPSY_DAGSTER_PG_URL:-}" ]]; then cp dagster.postgres.yaml $(DAGSTER_HOME)/dagster.yaml; \
	else cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml; fi

run: $(STAMP) instance
	$(VENV)/bin/autopsy demo

test: $(STAMP)
	$(PY) -m pytest

ui: $(STAMP) instance
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

mlflow-ui: $(STAMP) instance
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri "$(MLFLOW_TRACKING_URI)" --default-artifact-root "file://$(AUTOPSY_HOME)/mlartifacts"

bench: $(STAMP)
	$(PY) benchmarks/bench_labeling.py

clean:
	rm -rf $(AUTOPSY_HOME)
