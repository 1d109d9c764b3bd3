# Quick start:  make demo   (set up .venv with the vlm-grpo command; every recipe's sample data, a CPU smoke training
#                            run and its evaluation: grounding, video, image2code, mathvista, image_edit, mmmg; lists
#                            every PNG written; about 3 minutes on 2 idle cores after the install)
#               make test   (the whole offline test suite; what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VLM_GRPO := $(VENV)/bin/vlm-grpo
STAMP := $(VENV)/.installed-stamp
# pytest-xdist processes for `make test`: the tests are mostly single-threaded Python and subprocesses
TEST_WORKERS ?= 2
RUN := outputs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install demo test lint

# pip install -e puts the vlm-grpo command (pyproject.toml [project.scripts]) in $(VENV)/bin.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[deepspeed,dev]"
	touch $(STAMP)

install: $(STAMP)

# One recipe, as a user runs it: its sample data, a smoke run of config_smoke.yaml (tiny model, CPU), an evaluation.
# $(1): recipe, $(2): evaluate.py flags.
define demo_recipe
	$(VLM_GRPO) sample $(1)
	$(PY) recipes/$(1)/train.py --config recipes/$(1)/config_smoke.yaml --output_dir $(RUN)/$(1) --disable_tqdm true
	$(VLM_GRPO) eval $(RUN)/$(1) $(2)
endef

demo: install
	$(call demo_recipe,grounding,--max_samples 8)
	$(call demo_recipe,video,--max_samples 4)
	$(call demo_recipe,image2code,--max_samples 4 --generate_examples)
	$(call demo_recipe,mathvista,--max_samples 8)
	$(call demo_recipe,image_edit,--max_samples 4 --max_new_tokens 16)
	$(call demo_recipe,mmmg,--max_samples 4 --max_new_tokens 16)
	@echo
	@echo "Runs in $(RUN)/<recipe>: training.log, run_config.yaml, reward curve, adapter; eval/: metrics.json,"
	@echo "predictions.jsonl and the pictures. PNGs written:"
	@find $(RUN) -name '*.png' -not -path '*/checkpoint-*' | sort | sed 's/^/  /'
	@echo "Your own task: $(VLM_GRPO) new my_task --from grounding   (then sample, validate, train --smoke; README.md)"
	@echo "Real training: bash recipes/<recipe>/run_8gpu.sh   (8 GPUs; vlm-grpo train <recipe> is the same)"

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

lint: install
	$(VENV)/bin/ruff check .
