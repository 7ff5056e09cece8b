# The README's commands. `make demo` and `make test` create or refresh .venv by themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mammobench-installed
PORT ?= 5000
export HF_HUB_OFFLINE ?= 1
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.5

.PHONY: demo test lint format ui venv clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Until `mammobench benchmark --demo` lands: synth -> catalog -> prepare -> a tracked sweep.
demo: venv
	$(BIN)/mammobench synth runs/demo-data --patients 40 --seed 0
	$(BIN)/mammobench catalog runs/demo-data
	$(BIN)/mammobench prepare runs/demo-data --out runs/demo-prep --cls-size 32 --seg-size 32 --det-size 64
	$(BIN)/mammobench tune mobilenetv2 --data runs/demo-prep --samples 2 --max-epochs 12

test: venv
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
