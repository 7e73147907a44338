# xray-mlops: every step of the pipelines is a target here; Tekton steps run the same targets.
# Configuration: params.yaml, overridden by environment variables (DATASET_URI, REGISTRY_URI,
# TRAIN_EPOCHS, ... see README), overridden by the options of each script.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
# Container images (model/Dockerfile) have the requirements preinstalled and set USE_SYSTEM_PYTHON=1:
# targets then run $(PYTHON) and setup creates no venv.
USE_SYSTEM_PYTHON ?=
ifeq ($(strip $(USE_SYSTEM_PYTHON)),)
PY := $(VENV)/bin/python
BIN := $(VENV)/bin/
SETUP_STAMP := $(VENV)/.installed
SETUP_DEV_STAMP := $(VENV)/.installed-dev
else
PY := $(PYTHON)
BIN :=
SETUP_STAMP :=
SETUP_DEV_STAMP :=
endif
RUN_DIR ?= .run
VERSION ?=
CANDIDATE_FILE := $(RUN_DIR)/candidate-version
OUTCOME_FILE := $(RUN_DIR)/outcome.json

export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: help
help: ## list the targets with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: setup
setup: $(SETUP_STAMP) ## create .venv and install the pinned requirements (idempotent)

.PHONY: setup-dev
setup-dev: $(SETUP_DEV_STAMP) ## setup, plus the test-only requirements

.PHONY: data
data: setup ## write the sample (synthetic) dataset to DATASET_URI; EXTRA=N SEED=S adds N new images per class
	$(PY) -m scripts.sample_data $(if $(EXTRA),--extra $(EXTRA)) $(if $(SEED),--seed $(SEED)) $(if $(IF_MISSING),--if-missing)

.PHONY: data-push
data-push: setup ## upload a local dataset (SRC=DIR, default data_push.source) to DATASET_URI; manifest.json last
	$(PY) -m scripts.data_push $(if $(SRC),--src $(SRC))

.PHONY: validate-data
validate-data: setup ## check every image decodes, class counts, near-duplicate groups (split together), label conflicts; JSON report and contact sheet
	$(PY) -m scripts.validate_data --report $(RUN_DIR)/data-validation.json

.PHONY: train
train: setup ## train from scratch, evaluate, export ONNX, apply the gate, register in testing
	$(PY) -m model.train --version-file $(CANDIDATE_FILE) --outcome-file $(OUTCOME_FILE)

.PHONY: retrain
retrain: setup ## fine-tune production (else the newest tested testing model) on the current dataset; FORCE=1 retrains anyway
	$(PY) -m retrain --version-file $(CANDIDATE_FILE) --outcome-file $(OUTCOME_FILE) $(if $(filter 1 yes true,$(FORCE)),--force)

.PHONY: unittest
unittest: setup ## serve VERSION (default: newest testing) with the real API and run unittests/ against it
	$(PY) -m scripts.acceptance $(if $(VERSION),--version $(VERSION)) --run-dir $(RUN_DIR) --outcome-file $(OUTCOME_FILE)

.PHONY: notify
notify: setup ## email the product owner the report of VERSION (default: newest testing)
	$(PY) -m scripts.notify $(if $(VERSION),--version $(VERSION)) $(if $(TESTED_AS),--tested-as $(TESTED_AS))

.PHONY: pipeline
pipeline: setup ## training pipeline: data (if missing) -> validate -> train -> unittest -> notify
	$(PY) -m scripts.pipeline training --run-dir $(RUN_DIR)

.PHONY: retrain-pipeline
retrain-pipeline: setup ## retraining pipeline: validate -> retrain -> unittest -> notify (when a candidate was registered)
	$(PY) -m scripts.pipeline retraining --run-dir $(RUN_DIR)

.PHONY: model-test
model-test: setup ## model-test pipeline: the current unittests/ against production (else newest testing); result recorded and emailed
	$(PY) -m scripts.pipeline model-test --run-dir $(RUN_DIR)

.PHONY: promote
promote: setup ## VERSION (default: newest tested) -> production, then deploy (DEPLOY=gke: the GKE Deployment); a failed deploy moves production back
	$(PY) -m scripts.release promote $(if $(VERSION),--version $(VERSION)) --deploy $(or $(DEPLOY),local) --run-dir $(RUN_DIR)

.PHONY: rollback
rollback: setup ## point production back at the previous production version, then deploy it
	$(PY) -m scripts.release rollback --deploy $(or $(DEPLOY),local) --run-dir $(RUN_DIR)

.PHONY: serve
serve: setup ## run the API on the production model in the foreground
	$(PY) -m api.serve

.PHONY: stop
stop: setup ## stop the local background API
	$(PY) -m scripts.deploy stop --run-dir $(RUN_DIR)

.PHONY: test
test: setup-dev ## run the software tests (tests/)
	$(PY) -m pytest tests

.PHONY: lint
lint: setup-dev ## ruff (rules in pyproject.toml) and the import-linter contract: layers point one way, no cycles
	$(PY) -m ruff check .
	$(BIN)lint-imports

.PHONY: bench
bench: setup ## benchmarks, one table per section: serving (the API vs the in-process limit), registry (storage calls at 10 and 1,000 versions), training, grouping (21,165 images vs one training run)
	$(PY) -m bench

.PHONY: clean
clean: setup ## remove what is regenerated: a sample dataset (never real data), .run/, the outbox, the dataset cache
	$(PY) -m scripts.clean --run-dir $(RUN_DIR)

.PHONY: clean-registry
clean-registry: setup ## wipe a LOCAL registry (REGISTRY_URI), its production models and audit included; needs CONFIRM=1
	$(PY) -m scripts.clean --registry $(if $(filter 1 yes true,$(CONFIRM)),--confirm)
