# make demo  -- create .venv, then `xtalhpc demo`: simulate the bundled structures, generate a
#              synthetic dataset with 2 MPI ranks, train a small ResNet with 2-process DDP,
#              evaluate it, predict (README; DEMO_ARGS passes options, e.g. DEMO_ARGS=--patterns 900)
# make test  -- create .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-out
DEMO_ARGS ?=
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test demo bench clean

$(VENV)/.installed: pyproject.toml
	@echo "== creating $(VENV): PyTorch (CPU), xtalhpc and its test tools (90-140 s measured on 2 cores)"
	@date +%s > $(VENV).t0 2>/dev/null || true
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of PyTorch first (a plain `torch` requirement would pull the multi-GB CUDA build);
	# on a GPU machine install the CUDA build instead, see README.
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $@
	@echo "== $(VENV) ready in $$(( $$(date +%s) - $$(cat $(VENV).t0) )) s"; rm -f $(VENV).t0

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

demo: venv
	$(VENV)/bin/xtalhpc demo --output $(DEMO_OUT) $(DEMO_ARGS)

bench: venv
	$(PY) benchmarks/bench_simulate.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
