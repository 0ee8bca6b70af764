# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (the standard suite uses it beside digits).
$(DATA):
	.ci/install-system-packages

install: $(STAMP) $(DATA)

run: $(STAMP) $(DATA)
	$(VENV)/bin/disaggbench run --workers 2

test: $(STAMP) $(DATA)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) results
