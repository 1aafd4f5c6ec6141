# Set-up and entry points. `make train` and `make test` work on a fresh
# Linux machine with Python 3.10+: they create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
# Extra flags for the trainer, e.g. make train ARGS="--max_steps=20000".
ARGS ?=

.PHONY: train eval test benchmark clean-venv

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

$(VENV)/.installed: requirements.txt $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt requirements.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@

# Downloads CIFAR-10 into --data_dir (once) and trains.
train: $(VENV)/.installed
	$(BIN)/python cifar10_train.py $(ARGS)

# Evaluates the checkpoints of `make train` as they appear.
eval: $(VENV)/.installed
	$(BIN)/python cifar10_eval.py $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 -q tests

benchmark: $(VENV)/.installed
	$(BIN)/python cifar10_benchmark.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
