# The README's two commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup data demo test test-slow lint bench clean

setup: data $(STAMP)

# The Debian packages of the data sets that the tests and the figures read (Fashion-MNIST and
# English text; compsde.nn.data.DATA_PACKAGES), each with a file it installs. `make setup`
# installs the missing ones when it can (root, or sudo without a password): `apt-get update`
# once, then `apt-get install -y`. Otherwise it stops, before creating anything, with one line
# naming the packages and the command.
DATA_FILES := dataset-fashion-mnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
	fortunes=/usr/share/games/fortunes/computers
DATA_MISSING = $(shell for pair in $(DATA_FILES); do \
	test -s "$${pair#*=}" || echo "$${pair%%=*}"; done)
CAN_INSTALL = $(shell if ! command -v apt-get >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then echo root; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then echo sudo; fi)
AS_ROOT = $(if $(filter sudo,$(CAN_INSTALL)),sudo -n)
DATA_HELP = compsde needs the Debian packages $(DATA_MISSING) (its data sets); install them \
	with 'sudo apt-get install -y $(DATA_MISSING)', then run make again

data:
	$(if $(DATA_MISSING),$(if $(CAN_INSTALL),,$(error $(DATA_HELP))))
	$(if $(DATA_MISSING),$(AS_ROOT) apt-get update -q || true)
	$(if $(DATA_MISSING),$(AS_ROOT) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    --reinstall $(DATA_MISSING))
	@for pair in $(DATA_FILES); do test -s "$${pair#*=}" || { echo "error: $${pair%%=*}:" \
	    "$${pair#*=} is still missing after apt-get install"; exit 1; }; done

$(STAMP): pyproject.toml constraints.txt | data
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,ray,lightning,accelerate]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/compsde demo --out results/demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

# Under make, a test whose data set is missing fails (tests/conftest.py) instead of skipping.
# Test files run in TEST_JOBS worker processes (pytest-xdist; a file's tests stay together, so
# its module-scoped fixtures are built once).
TEST_JOBS ?= 2

test: lint
	COMPSDE_REQUIRE_DATA=1 $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

# The slow tier: the quick presets of the figures, torchrun jobs, the README's long commands.
test-slow: setup
	COMPSDE_REQUIRE_DATA=1 $(PY) -m pytest -q -m slow -n $(TEST_JOBS) --dist loadfile

bench: setup
	$(PY) benchmarks/simulate.py
	$(PY) benchmarks/compress.py

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
