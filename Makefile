# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch 2.13.0 lies on this machine's disk; pinning it here keeps installs fast and CPU-only.
TORCH_PIN ?= torch==2.13.0

.PHONY: venv dev demo test bench atlas clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_PIN)"
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.base

dev: $(VENV)/.dev

# demo: train convnext_atto on the embedded digits (1400 train / 397 val, 32x32), then evaluate the best
# checkpoint (~1 min on 2 idle cores; expect val accuracy ~0.98). Outputs: runs/demo/{metrics.jsonl,best,last}.
demo: $(VENV)/.base
	$(VENV)/bin/convatlas train convnext_atto --data digits --epochs 8 --lr 3e-3 --batch-size 64 --out runs/demo
	$(VENV)/bin/convatlas eval runs/demo/best.safetensors --data digits

test: $(VENV)/.dev
	$(PY) -m pytest -q --durations=15 tests

atlas: $(VENV)/.base
	$(PY) scripts/make_atlas.py

clean:
	rm -rf $(VENV) runs .pytest_cache
