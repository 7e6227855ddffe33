# Loom: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-delivery test test-unit test-integration crds crds-check lint chart images clean

install: $(STAMP)

# torch is pinned to the CPU build on local disk; anything looser downloads several GB.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[workloads,local,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m loom.demo

# The quickstart, then a second model promoted step by step and a slow one rolled back.
demo-delivery: $(STAMP)
	$(PY) -m loom.demo --delivery

test: $(STAMP)
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

test-integration: $(STAMP)
	$(PY) -m pytest -q -m integration

crds: $(STAMP)
	$(PY) -m loom.api.crdgen crds/ charts/loom/crds/

crds-check: $(STAMP)
	$(PY) -m loom.api.crdgen --check crds/ charts/loom/crds/

lint: $(STAMP)
	$(PY) -m loom.api.crdgen --check crds/ charts/loom/crds/
	$(PY) -m compileall -q operator tests

images:
	docker build -f images/operator/Dockerfile -t loom-operator:dev .
	docker build -f images/workload/Dockerfile -t loom-workload:dev .

clean:
	rm -rf $(VENV) .loom .pytest_cache
