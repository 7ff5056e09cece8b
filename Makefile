# The README's commands. `make demo` and `make test` create or refresh .venv by themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mammobench-installed
PORT ?= 5000
export HF_HUB_OFFLINE ?= 1
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.5

.PHONY: demo test test-deps lint format ui venv clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The embedded default: synthesise, prepare, every architecture of the study at tiny sizes on the
# local Ray cluster, leaderboard beside the published figures, HTML report, MLflow UI command.
demo: venv
	$(BIN)/mammobench benchmark --demo

# Debian packages the tests need: PostgreSQL (a real tracking-server backend, tests/reliability)
# and Chromium (the browser playwright drives in tests/orchestration/test_browser.py).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; }
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: venv test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: venv
	$(BIN)/mammobench ui --port $(PORT)

clean:
	rm -rf $(VENV) runs .pytest_cache
