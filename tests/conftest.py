"""Fixtures and hooks: run a test on every backend that can run here, mark it with its op family.

Only fixtures and hooks live here; the helpers a test imports are in
``helpers.py`` (``from helpers import assert_close, to_backend``), the
hypothesis strategies in ``strategies.py``.

``SCRATCHNET_FAKE_CUPY=1`` puts the CuPy stand-in (``tests/fake_cupy``) first on
``sys.path`` before scratchnet is imported, so ``import cupy`` finds it and the
cupy backend runs on the host: its Python logic, its kernels through the
host shim, and the stand-in's checks (no silent host copies, counted
synchronisations). ``make test`` runs a subset so (see the Makefile); on a
machine with a real GPU the variable must stay unset.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

FAKE_CUPY = os.environ.get("SCRATCHNET_FAKE_CUPY", "") not in ("", "0")
if FAKE_CUPY:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "fake_cupy"))
    import cupy  # noqa: E402

    assert getattr(cupy, "STAND_IN", False), f"SCRATCHNET_FAKE_CUPY=1 but {cupy.__file__} is not the stand-in"

import scratchnet as sn  # noqa: E402  (after the stand-in, when asked for)
from helpers import backend_params  # noqa: E402  (after the stand-in: it imports scratchnet.backend)


@pytest.fixture(params=backend_params())
def backend(request):
    """The backend under test, selected for the duration of the test."""
    with sn.use_backend(request.param) as be:
        yield be


@pytest.fixture(scope="session")
def numba_ops():
    """The Numba backend itself, for comparing its kernels with the reference.

    Numba is a hard dependency, so this never skips: a broken install fails.
    """
    from scratchnet.ops.backends import build_numba

    return build_numba()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# --- hypothesis: one profile for every run, reproducible -------------------------------------------
# The property tests (test_kernels_properties.py) draw 25 examples each, the same 25 on every run
# (derandomize: CI and a learner see what the last run saw); no deadline, since the first example
# of a kernel includes Numba's compilation. HYPOTHESIS_PROFILE=explore draws 500 fresh examples a
# test, to hunt for bugs; a failure prints the @reproduce_failure line that replays it. No example
# database (database=None): hypothesis keeps only its own cache in .hypothesis/, which gitignores
# itself. The GPU image has no hypothesis: the property tests skip there.
try:
    from hypothesis import settings
except ImportError:
    pass
else:
    settings.register_profile("scratchnet", max_examples=25, deadline=None, derandomize=True, database=None,
                              print_blob=True)
    settings.register_profile("explore", max_examples=500, deadline=None, database=None, print_blob=True)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "scratchnet"))


# --- markers by op family: `pytest -m conv` ---------------------------------------------------------
# Declared in pyproject.toml ([tool.pytest.ini_options] markers). A test file belongs to the families
# listed here; a file not listed (and test_fast_kernels_match_reference.py, which spans them) is
# sorted test by test, by the words of the test's name (FAMILY_WORDS). The property tests carry
# their marks on each test.
FILE_FAMILIES = {
    "test_activations.py": ("activations",),
    "test_attention.py": ("attention",),
    "test_avg_pooling.py": ("pool",),
    "test_backend.py": ("backend",),
    "test_backend_checkout.py": ("packaging",),
    "test_blas.py": ("dense", "backend"),
    "test_callbacks.py": ("training",),
    "test_checkpoint.py": ("checkpoint",),
    "test_checkpoint_crafted.py": ("checkpoint",),
    "test_cli.py": ("cli",),
    "test_cli_errors.py": ("cli",),
    "test_conv.py": ("conv",),
    "test_conv_algorithm.py": ("conv",),
    "test_cuda.py": ("backend",),
    "test_cupy_backend.py": ("backend",),
    "test_custom_layers.py": ("layers",),
    "test_data_idx.py": ("data",),
    "test_data_mnist.py": ("data",),
    "test_dense.py": ("dense",),
    "test_distributed.py": ("distributed",),
    "test_docs.py": ("docs",),
    "test_download.py": ("data",),
    "test_dropout.py": ("dropout",),
    "test_dtypes.py": ("backend",),
    "test_ema.py": ("optimizers",),
    "test_embedding.py": ("embedding",),
    "test_embedding_lstm.py": ("embedding", "lstm"),
    "test_exercises.py": ("docs",),
    "test_export.py": ("checkpoint",),
    "test_fast_kernels_match_reference.py": ("backend",),
    "test_folder_safety.py": ("training",),
    "test_fused_update.py": ("optimizers",),
    "test_gelu.py": ("activations",),
    "test_gradcheck.py": ("gradcheck",),
    "test_initializers.py": ("layers",),
    "test_interop.py": ("interop",),
    "test_interop_float64.py": ("interop",),
    "test_interop_sequence_layers.py": ("interop", "rnn"),
    "test_kernels_properties.py": ("properties",),
    "test_layers.py": ("layers",),
    "test_normalization.py": ("layers",),
    "test_learner_cli.py": ("cli",),
    "test_learner_path.py": ("docs",),
    "test_loss_options.py": ("losses",),
    "test_losses.py": ("losses",),
    "test_lstm.py": ("lstm",),
    "test_gru.py": ("rnn",),
    "test_masks.py": ("rnn", "layers"),
    "test_masked_training.py": ("rnn", "losses"),
    "test_model.py": ("model",),
    "test_functional.py": ("model", "interop"),
    "test_grouped_conv.py": ("conv",),
    "test_optimizers.py": ("optimizers",),
    "test_packaging.py": ("packaging",),
    "test_pooling.py": ("pool",),
    "test_profiler.py": ("training",),
    "test_promises_checkpoint.py": ("checkpoint",),
    "test_promises_cli.py": ("cli",),
    "test_promises_files.py": ("checkpoint", "data"),
    "test_promises_mpi.py": ("distributed",),
    "test_promises_resume.py": ("checkpoint",),
    "test_promises_training.py": ("training",),
    "test_tensorboard.py": ("training",),
    "test_text.py": ("data",),
    "test_zoo.py": ("model",),
}
# Files sorted test by test as well: they hold the fast kernels of several families.
BY_TEST_NAME = {"test_fast_kernels_match_reference.py"}
FAMILY_WORDS = {
    "dense": ("dense", "gemm", "matmul"),
    "conv": ("conv", "winograd", "im2col", "col2im"),
    "pool": ("pool",),
    "lstm": ("lstm", "swap_batch_time"),
    "rnn": ("gru", "simple_rnn"),
    "embedding": ("embedding",),
    "attention": ("attention",),
    "dropout": ("dropout",),
    "losses": ("softmax", "cross_entropy"),
    "optimizers": ("update", "sgd", "adam", "sum_of_squares"),
}


def families(filename, test_name):
    """The op families of test ``test_name`` (its function's name) in file ``filename``."""
    found = set(FILE_FAMILIES.get(filename, ()))
    if filename in BY_TEST_NAME or filename not in FILE_FAMILIES:
        found.update(family for family, words in FAMILY_WORDS.items() if any(w in test_name for w in words))
    return found


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        for family in sorted(families(item.path.name, name)):
            item.add_marker(getattr(pytest.mark, family))
