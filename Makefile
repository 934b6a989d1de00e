# The two set-up commands of the README are `make demo` and `make test`;
# each installs what it needs first (a virtualenv in .venv, and nats-server for tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all check bench bench-quick simulate nats-server chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,plots,crewai,autogen,cluster,observability,dashboard]'
	touch $(STAMP)

# apt waits (up to 10 minutes) for another apt/dpkg process to release its lock.
APT_GET := apt-get -o DPkg::Lock::Timeout=600

nats-server:
	@command -v nats-server >/dev/null 2>&1 || { \
	  echo "nats-server not found: installing it from the OS package manager"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO $(APT_GET) update -qq && $$SUDO $(APT_GET) install -y -qq nats-server; }
	@nats-server --version

## The system Chromium that the dashboard's browser tests drive (Playwright, no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "chromium not found: installing it from the OS package manager"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO $(APT_GET) update -qq && $$SUDO $(APT_GET) install -y -qq chromium; }
	@chromium --version

## Main job: the mesh demo on the embedded transport (no server needed).
demo: $(STAMP)
	$(BIN)/agentmesh demo

## The test suite (everything but the `slow` marker), including real nats-server tests.
test: $(STAMP) nats-server chromium
	$(BIN)/python -m pytest -m "not slow" -q

## Everything, long chaos runs included.
test-all: $(STAMP) nats-server chromium
	$(BIN)/python -m pytest -q

## Lint, types and layer contracts.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP) nats-server
	$(BIN)/python -m benchmarks run

bench-quick: $(STAMP) nats-server
	$(BIN)/python -m benchmarks run --quick

## The chaos-simulation library and its size targets; writes docs/simulations.md.
simulate: $(STAMP) nats-server
	$(BIN)/python -m simulations.docs --targets

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
