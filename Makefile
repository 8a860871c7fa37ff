# podbatch — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
STAMP := $(VENV)/.installed
LOCAL_KUBECONFIG := $(HOME)/.cache/podbatch/cluster/kubeconfig

include Makefile.crds.mk

.PHONY: help venv test test-unit test-integration test-e2e lint bench demo cluster-up cluster-down kind-up image crds verify-crds verify clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PY) -m venv $(VENV) || { echo "error: could not create a virtualenv with $(PY) (on Debian: apt-get install python3-venv)"; exit 1; }
	@$(VENV)/bin/pip install -q --upgrade pip >/dev/null
	@$(VENV)/bin/pip install -q -e '.[operator,test]'
	@touch $@

venv: $(STAMP) ## create .venv with podbatch and its test tools

test: $(STAMP) ## run every test tier (unit, lint, integration, e2e); brings up the local cluster if KUBECONFIG is unset
	$(PYTEST) -m unit -q
	$(VENV)/bin/lint-imports
	hack/with-cluster.sh $(PYTEST) -m "integration or e2e" -q

test-unit: $(STAMP) ## unit tests only (no cluster)
	$(PYTEST) -m unit -q

test-integration: $(STAMP) ## integration tests against KUBECONFIG or the local cluster
	hack/with-cluster.sh $(PYTEST) -m integration -q

test-e2e: $(STAMP) ## end-to-end tests with real pods
	hack/with-cluster.sh $(PYTEST) -m e2e -q

lint: $(STAMP) ## import contracts (core and api stay free of kopf and Kubernetes clients), pyflakes
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pyflakes operator/podbatch hack/*.py tests

bench: $(STAMP) ## benchmarks: podbatch next to its peers, printed as ratios
	hack/with-cluster.sh $(PYTEST) -m bench -q -s tests/bench

demo: $(STAMP) ## bring up a cluster if needed, run the operator and the quickstart, show progress and results
	$(PYTHON) hack/demo.py

cluster-up: $(STAMP) ## start the local cluster (kept running) and print its KUBECONFIG
	hack/cluster-up.sh

cluster-down: ## stop the local cluster and everything it started
	hack/cluster-down.sh

kind-up: ## create a kind cluster (needs Docker) and print its KUBECONFIG
	hack/kind-up.sh

image: $(STAMP) ## build the operator image podbatch/operator:<version> without Docker (cached) and load it into the local cluster
	hack/build-image.sh

verify: verify-crds lint ## every drift and contract check

clean: ## remove the virtualenv and caches of this checkout
	rm -rf $(VENV) .pytest_cache
