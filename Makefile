# One command each: `make demo` runs the whole path on the bundled example, `make test` the tests.
# Both bootstrap .venv (Python 3.11) with every extra at the versions of requirements-lock.txt
# and lava-nc by its no-deps recipe.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements-lock.txt

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[lava,gpu,export,report,dist,chip,metrics,llm,test]'
	# lava-nc 0.10.0 declares Python < 3.11; its real dependencies come with the lava extra.
	$(BIN)/python -m pip install -q --no-deps --ignore-requires-python lava-nc==0.10.0
	$(BIN)/python -m pip install -q --no-deps --ignore-requires-python lava-dl==0.6.0
	# neurobench's declared dependencies pull stacks its metrics never import (pyproject: metrics).
	$(BIN)/python -m pip install -q --no-deps neurobench==2.3.0
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/sbcompile demo

clean:
	rm -rf $(VENV) build *.egg-info
