# The README's two commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch is pinned to 2.13.0 in the same pip command as everything else (an unpinned torch would
# pull a multi-GB CUDA build); constraints.txt pins the versions compsde is tested with. The ray
# extra is installed too, so that the tests of `--executor ray` run (on a local cluster).
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/compsde demo --out results/demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: lint
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/simulate.py
	$(PY) benchmarks/compress.py

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
