# Two commands a newcomer needs (both idempotent; re-running reuses .venv):
#   make train   install into .venv and train the default config on the digits dataset
#   make test    install the test tools too, then lint, type-check and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS := dev,timm,onnx,tune,ray,wandb,mlflow,report,hf
# A new stamp (a reinstall) whenever pyproject.toml or the extras change.
STAMP  := $(VENV)/.installed-$(shell echo $(EXTRAS) | cat pyproject.toml - | cksum | cut -d' ' -f1)

.PHONY: install train test test-ray lint bench docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

train: install
	$(BIN)/brickwork train

lint: install
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples
	$(BIN)/mypy

# Two workers, one test file each at a time (module fixtures run once): the 2-core budget.
test: lint
	$(BIN)/python -m pytest -m "not ray" -n 2 --dist loadfile
	$(MAKE) test-ray

# Tests that start Ray run in a network namespace with only loopback (root; util-linux's
# unshare and iproute2's ip): Ray probes cloud metadata addresses and listens on all interfaces.
test-ray: install
	unshare -n sh -c 'ip link set lo up && exec $(BIN)/python -m pytest -m ray tests/integration/test_tune_ray.py'

docs: install
	$(BIN)/python scripts/update_readme_reference.py

bench: install
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
