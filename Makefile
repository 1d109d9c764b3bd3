# Quick start:  make demo   (set up .venv, sample data, CPU smoke training + evaluation: grounding, image_edit)
#               make test   (the whole offline test suite; what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pytest-xdist processes for `make test`: the tests are mostly single-threaded Python and subprocesses
TEST_WORKERS ?= 2
RUN := outputs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[deepspeed,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) recipes/grounding/data.py --make-sample recipes/grounding/data/sample
	$(PY) -m core.testing.tiny qwen2_5_vl
	$(PY) recipes/grounding/train.py --config recipes/grounding/config_smoke.yaml --output_dir $(RUN)
	$(PY) recipes/grounding/evaluate.py $(RUN) --max_samples 16
	$(PY) recipes/image_edit/data.py --make-sample recipes/image_edit/data/sample
	$(PY) recipes/image_edit/train.py --config recipes/image_edit/config_smoke.yaml --output_dir $(RUN)-image-edit
	$(PY) recipes/image_edit/evaluate.py $(RUN)-image-edit --max_samples 4 --max_new_tokens 16
	@echo
	@echo "Grounding run:   $(RUN)"
	@echo "  training:      $(RUN)/trainer_state.json, reward curve $(RUN)/reward_curve.png"
	@echo "  evaluation:    $(RUN)/eval/metrics.json, $(RUN)/eval/predictions.jsonl, $(RUN)/eval/predictions.png"
	@echo "Image-edit run:  $(RUN)-image-edit (tiny Qwen-Image-Edit, judged by the local judge server on 127.0.0.1)"
	@echo "  evaluation:    $(RUN)-image-edit/eval/metrics.json, $(RUN)-image-edit/eval/predictions.png"
	@echo "Real training:   bash recipes/grounding/run_8gpu.sh   (see README.md for every recipe)"

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

lint: install
	$(VENV)/bin/ruff check .
