PYTHON ?= python3
# CPU build of torch; on machines with a GPU, install torch as usual and run `make install-deps`
TORCH_CPU ?= torch==2.13.0
# venv of `make check-cuda-build` (the CUDA build of torch, about 5.5 GB): outside the repository
CUDA_VENV ?= $(HOME)/.cache/echo/cuda-venv

.PHONY: install install-deps install-eval test-deps test test-slow mutants demo bench pretrained check-cuda-build gpu-check

install:            ## CPU-only machine: pinned CPU torch, then the rest
	$(PYTHON) -m pip install $(TORCH_CPU)
	$(MAKE) install-deps

install-deps:       ## everything but torch
	$(PYTHON) -m pip install -r requirements.txt

install-eval:       ## evaluation extras: DNSMOS (calc_metrics.py --dnsmos), DeepFilterNet3 (experiments/compare.py --dfn3)
	@# the torch already installed is pinned, so that nothing here can swap it for another build
	@constraints=$$(mktemp); \
	$(PYTHON) -c "import torch; print('torch==' + torch.__version__)" > $$constraints 2>/dev/null || : > $$constraints; \
	$(PYTHON) -m pip install -r requirements-eval.txt -c $$constraints; status=$$?; rm -f $$constraints; exit $$status

test-deps:          ## install what the tests need when it is missing (`make test` as the first command)
	@$(PYTHON) -m echo.util.requirements_check requirements.txt || { \
	echo "make test: running make install first" >&2; $(MAKE) install; }

test: test-deps     ## the test suite (CPU, a few minutes); installs what is missing first; "no tests ran" (pytest exit 5) fails too
	@$(PYTHON) -m pytest -n 2 -rs -q tests; status=$$?; \
	if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$status

test-slow:          ## the slow end-to-end tests (processes killed with SIGINT/SIGKILL and resumed)
	$(PYTHON) -m pytest -n 2 -rs -q -m slow tests

mutants:            ## plausible one-line bugs (tools/mutant_list.py) the suite must catch, on a copy of the tree (~30 min; not in CI)
	$(PYTHON) tools/mutants.py $(MUTANT_ARGS)

demo: install       ## quickstart: synthetic data, tiny model, enhance, score, plots (CPU, no download)
	$(PYTHON) demo/run_demo.py --out_dir demo_out --overwrite

pretrained:         ## the shipped CPU model's recipe in the background (90 min on 2 cores): runs/cpu_small/, log runs/cpu_small.log
	@mkdir -p runs
	nohup $(PYTHON) -m echo.recipes.cpu_small --out_dir runs/cpu_small > runs/cpu_small.log 2>&1 &
	@echo "training in the background: tail -f runs/cpu_small.log (run 'make pretrained' again to resume after a kill)"

bench:              ## speed and memory numbers -> benchmarks/results/latest.json
	$(PYTHON) benchmarks/bench.py

check-cuda-build:   ## compile + import the CUDA kernels with the CUDA build of torch, in $(CUDA_VENV); no GPU needed, not in CI
	$(PYTHON) benchmarks/check_cuda_build.py --venv $(CUDA_VENV)

gpu-check:          ## on a GPU machine: kernel parity, speed, bf16, DDP, enhancement RTF -> JSON under benchmarks/results/ (<= 5 min)
	$(PYTHON) benchmarks/gpu_check.py
