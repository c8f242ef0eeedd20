# he-keras: two commands set everything up on a fresh machine.
#   make run   - install into .venv, train PGD-AT+HE on digits, evaluate, export
#   make test  - install into .venv (with test extras), run the test suite (2 pytest processes)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR := runs/quickstart

.PHONY: install run test bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) apps/train.py --flagfile=configs/quickstart.cfg --output_dir=$(RUN_DIR)
	$(PY) apps/evaluate.py --model=$(RUN_DIR)/model.keras --dataset=digits --suite=quick --eps=0.3 --output_dir=$(RUN_DIR)/eval
	$(PY) apps/export.py --model=$(RUN_DIR)/model.keras --report=$(RUN_DIR)/eval/report.json --output_dir=$(RUN_DIR)/export

test: install
	$(PY) -m pytest -n 2 --dist loadfile

bench: install
	$(PY) bench/he_overhead.py
	$(PY) bench/frameworks_speed.py
	$(PY) bench/attack_speed.py

clean:
	rm -rf runs build *.egg-info

# `make experiments` (QUICK=1 for toy sizes): the reproduction study.
EXPERIMENTS_PYTHON := $(PY)
experiments: install
include experiments/Makefile.inc
