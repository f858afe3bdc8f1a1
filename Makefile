# Slipway developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,train,serve]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv with the package and dev tools

controlplane: $(STAMP) ## build etcd, kube-apiserver and kubectl once into ~/.cache/slipway
	$(BIN)/slipway controlplane

dev: $(STAMP) ## run the dev stack (control plane + CRDs + operator) until Ctrl-C
	$(BIN)/slipway dev up

demo: $(STAMP) controlplane ## the whole platform in a few minutes (`slipway demo`): train, canary, rollback, timeline
	$(BIN)/slipway demo

dev-down: $(STAMP) ## stop a dev stack running elsewhere
	$(BIN)/slipway dev down

crds: $(STAMP) ## regenerate crds/, the chart's CRDs and docs/api.md from operator/slipway/api
	$(BIN)/slipway crds
	$(BIN)/slipway docs

lint: $(STAMP) ## ruff, mypy --strict, import layers, CRD and API-doc drift
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/slipway crds --check
	$(BIN)/slipway docs --check

unit: $(STAMP) ## unit tests only (no servers)
	$(BIN)/pytest tests/unit

integration: $(STAMP) controlplane ## integration tests against a real kube-apiserver + etcd
	$(BIN)/pytest tests/integration

e2e: $(STAMP) controlplane ## end-to-end tests in the dev stack (real Ray, Feast, training, serving, Prometheus)
	$(BIN)/pytest tests/e2e

test: lint controlplane ## everything CI runs: lint, then every test (pytest exit 5, no tests, fails)
	$(BIN)/pytest tests

bench: $(STAMP) controlplane ## the benchmarks (operator scale, training, serving, rollout detection); see bench/README.md
	$(BIN)/python bench/operator_scale.py
	$(BIN)/python bench/training_overhead.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/rollout_detection.py

clean: ## remove the venv and dev-stack state (keeps the ~/.cache build)
	rm -rf $(VENV) .dev .pytest_cache .mypy_cache .ruff_cache

.PHONY: help venv controlplane dev demo dev-down crds lint unit integration e2e test bench clean
