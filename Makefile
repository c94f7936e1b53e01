# incisive — the two commands a new user needs: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-out
PATIENTS ?= 12

.PHONY: install demo test lint typecheck unit bench clean wheelhouse
WHEELHOUSE ?= wheelhouse

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh $(DEMO_DIR) $(PATIENTS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -n 2 --dist loadgroup

unit: $(STAMP)
	$(BIN)/pytest -m "not slow"

# Every wheel a node needs (the project + its runtime dependencies at the versions installed in $(VENV), PyTorch
# the CPU build found the same way `install` finds it, never CUDA), with sha256 hashes in requirements.txt, for
# scripts/install-offline.sh on a machine without an index (docs/deployment.md "Offline install").
wheelhouse: $(STAMP)
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(BIN)/pip freeze --exclude-editable > $(WHEELHOUSE)/constraints.txt
	$(BIN)/pip wheel -q --wheel-dir $(WHEELHOUSE) --constraint $(WHEELHOUSE)/constraints.txt .
	$(BIN)/python scripts/wheelhouse.py $(WHEELHOUSE)

bench: $(STAMP)
	$(BIN)/python benchmarks/deid.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
