# The README's commands. `make train` and `make test` each install into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/default
CONFIG ?= experiments/synthetic_translation.py
# Extra flags for lmjax.main, e.g. make train ARGS='--config.num_train_steps=100'
ARGS ?=
export XLA_FLAGS ?=

.PHONY: install train test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed

train: install
	$(PY) -m lmjax.main --config=$(CONFIG) --workdir=$(WORKDIR) $(ARGS)

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) workdirs
