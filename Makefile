# scratchnet: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv if it is absent and install what they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NVCC   ?= nvcc
CU     := $(wildcard kernels/*.cu)
PTX_DIR := build/ptx

.PHONY: test demo bench nvcc-check clean

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
	      $(NVCC) -ptx -arch=sm_$$arch -DREAL=$$prec -Ikernels -o $(PTX_DIR)/$$(basename $$f .cu)_sm$$arch_$$prec.ptx $$f || exit 1; \
	    done; done; echo "nvcc: $$f compiles for sm_80 and sm_90"; done; \
	else echo "nvcc-check: nvcc not found; skipped"; fi

test: $(STAMP) nvcc-check
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/scratchnet demo

bench: $(STAMP)
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) bench/ops.py

clean:
	rm -rf build $(PTX_DIR) .pytest_cache
