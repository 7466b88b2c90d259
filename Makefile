# Two commands on a fresh machine with only Python 3.11 and pip:
#   make demo   create .venv, install autossl, pretrain on the built-in MNIST digits and report k-NN accuracy
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/autossl demo

# one worker per core (tests run one torch thread each); a test file stays on one worker, in order
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs checkpoints
