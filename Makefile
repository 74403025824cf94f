# make demo  -- create .venv and simulate BT-1 patterns of the bundled structures
# make test  -- create .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of PyTorch first (a plain `torch` requirement would pull the multi-GB CUDA build);
	# on a GPU machine install the CUDA build instead, see README.
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

demo: venv
	$(VENV)/bin/xtalhpc demo --output $(DEMO_OUT)

bench: venv
	$(PY) benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
