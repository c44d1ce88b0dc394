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

# Test files are spread over TEST_WORKERS processes (pytest-xdist), one file per worker at a
# time so its module fixtures are built once; the suite is mostly compiles and subprocess
# waits, which two cores run side by side.
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

clean:
	rm -rf $(VENV) workdirs
