# cifarlab: `make demo` and `make test` work on a fresh clone (they run `setup` first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# the shared copy where it exists, else $CIFARLAB_DATA, else the official download
DATA   ?= $(or $(wildcard ../shared/data/cifar10-jpeg.tar.gz),$(CIFARLAB_DATA),cifar10)

.PHONY: setup demo test lint format clean

setup: $(BIN)/cifarlab

# torch first, pinned: on our machines a CPU build from local disk; a bare `torch` requirement
# would pull a multi-GB CUDA build. TORCH_INDEX=URL takes torch from another index (PyTorch's CPU one).
$(BIN)/cifarlab: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/cifarlab compare --preset blog --models tutorial,simple,stacked --epochs 3 \
		--limit-train 10000 --data $(DATA) --workspace cifarlab-runs/demo
	@echo "The demo's runs are in cifarlab-runs/demo. Next, inside the venv:"
	@echo "  cifarlab results --workspace cifarlab-runs/demo --group-by model,optimizer"
	@echo "  cifarlab report --workspace cifarlab-runs/demo"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) cifarlab-runs .pytest_cache
