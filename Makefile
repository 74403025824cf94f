# make demo  -- create .venv and simulate BT-1 patterns of the bundled structures
# make test  -- create .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out

.PHONY: venv test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
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
