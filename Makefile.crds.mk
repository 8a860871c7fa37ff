# CRDs and the API reference, generated from operator/podbatch/api (include from the Makefile).
PYTHON ?= .venv/bin/python

.PHONY: crds verify-crds

crds: ## Regenerate crds/*.yaml, the chart's copy and docs/api.md from the pydantic models
	$(PYTHON) -m podbatch.api.crdgen
	$(PYTHON) -m podbatch.api.docs

verify-crds: ## Fail when crds/, charts/podbatch/crds/ or docs/api.md differ from the models
	$(PYTHON) -m podbatch.api.crdgen --check
	$(PYTHON) -m podbatch.api.docs --check
