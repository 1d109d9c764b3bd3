# Quick start:  make demo   (set up .venv, build sample data, smoke-train grounding on CPU, evaluate)
#               make test   (the whole offline test suite; what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUN := outputs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test lint clean-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[deepspeed,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) recipes/grounding/data.py --make-sample recipes/grounding/data/sample
	$(PY) -m core.tiny qwen2_5_vl
	$(PY) recipes/grounding/train.py --config recipes/grounding/config_smoke.yaml --output_dir $(RUN)
	$(PY) recipes/grounding/evaluate.py $(RUN) --max_samples 16
	@echo
	@echo "Demo run:        $(RUN)"
	@echo "Training log:    $(RUN)/trainer_state.json, reward curve $(RUN)/reward_curve.png"
	@echo "Evaluation:      $(RUN)/eval/metrics.json, $(RUN)/eval/predictions.jsonl, $(RUN)/eval/predictions.png"
	@echo "Real training:   bash recipes/grounding/run_8gpu.sh"

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .
