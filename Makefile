PYTHON ?= python3
# CPU build of torch; on machines with a GPU, install torch as usual and run `make install-deps`
TORCH_CPU ?= torch==2.13.0

.PHONY: install install-deps test test-slow demo bench

install:            ## CPU-only machine: pinned CPU torch, then the rest
	$(PYTHON) -m pip install $(TORCH_CPU)
	$(MAKE) install-deps

install-deps:       ## everything but torch
	$(PYTHON) -m pip install -r requirements.txt

test:               ## the test suite (CPU, a few minutes); "no tests ran" (pytest exit 5) fails too
	@$(PYTHON) -m pytest -n 2 -rs -q tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$status

test-slow:          ## the slow end-to-end tests (processes killed with SIGINT/SIGKILL and resumed)
	$(PYTHON) -m pytest -n 2 -rs -q -m slow tests

demo: install       ## quickstart: synthetic data, tiny model, enhance, score, plots (CPU, no download)
	$(PYTHON) demo/run_demo.py --out_dir demo_out --overwrite

bench:              ## speed and memory numbers -> benchmarks/results/latest.json
	$(PYTHON) benchmarks/bench.py
