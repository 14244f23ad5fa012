# One-command entry points. `make demo` and `make test` work on a fresh clone: they create
# .venv, install the project (editable, with test extras) and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DATA ?= data/synthetic2022-realistic
DEMO_EXPERIMENT ?= mobilenetv2_baseline
DEMO_EPOCHS ?= 3
DEMO_CALLBACKS ?= inlier

.PHONY: install demo test test-fast bench gpu-check method-table clean-logs help

help:
	@echo "make demo       set up, write the synthetic dataset, train the MobileNetV2 baseline, fit the inlier models, print the official scores"
	@echo "make test       set up and run the whole test suite"
	@echo "make test-fast  set up and run the tests not marked slow"
	@echo "make bench      data-pipeline benchmark (writes benchmarks/data_pipeline.json)"
	@echo "make gpu-check  throughput, profile and a GPU-budget method comparison (benchmarks/gpu_check.sh)"
	@echo "make method-table  every method on the synthetic set, one table (writes benchmarks/method_table.md/.json)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ required, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# data=synthetic writes the dataset on first use (again when its settings change); the inlier
# callback fits a 1-NN per section on the embeddings and writes the model bundles
demo: $(STAMP)
	$(BIN)/asd-train experiment=$(DEMO_EXPERIMENT) data=synthetic data.root=$(abspath $(DEMO_DATA)) \
		callbacks=$(DEMO_CALLBACKS) trainer.max_epochs=$(DEMO_EPOCHS)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/data_pipeline.py --out benchmarks/data_pipeline.json

gpu-check: $(STAMP)
	bash benchmarks/gpu_check.sh

method-table: $(STAMP)
	$(BIN)/python benchmarks/method_table.py --out benchmarks/method_table.json --markdown benchmarks/method_table.md

clean-logs:
	rm -rf logs
