"""Two kinds of configuration: the Keras convention of ``get_config()``, and the convolution algorithm setting.

``Configurable`` is the Keras convention shared by losses, regularizers,
initializers and optimizers.

``conv_algorithm`` chooses how ``conv2d`` computes (``scratchnet/ops/conv.py``):

- ``auto`` (the default): Winograd F(4x4, 5x5) for float32 convolutions it
  applies to (stride 1, 5x5, at least 8 channels in and out, on the numba
  backend), the direct algorithm (im2col and GEMM) for everything else, and
  for every float64 convolution. float64 is the reference-grade dtype: its
  convolutions are the exact sums, as TensorFlow's are, so that a float64 run
  tracks another framework or a finite difference to rounding.
- ``direct``: im2col and GEMM everywhere.
- ``winograd``: Winograd, in float64 too, and an error naming the shapes
  for a convolution it cannot do (a stride of 2, a 3x3 kernel, a first layer
  with one channel in, the numpy or cupy backend): asking for an algorithm
  never silently runs another one. So a whole LeNet under ``winograd`` stops
  at its first layer; set it around the convolutions it is meant for.

Why float64 does not take Winograd by default: Winograd computes each 4x4
tile of outputs through transforms of its 8x8 input window, whose rounding
errors do not cancel, so an output that is exactly zero (a window of zero
pixels, most of an MNIST digit, in a tile that reaches a stroke) comes out
as a tiny nonzero (up to 1e-14 of the layer's largest output). A ReLU passes
the positive ones, and their gradient, which TensorFlow's ReLU stops; a
max-pool over them sends its gradient to another pixel than TensorFlow's;
and training amplifies that: lesson 2's LeNet in float64 was
0.3 to 0.7 away from Keras (relative, worst weight) after 200 SGD steps, and
is 1e-15 away with the direct algorithm (``tests/test_conv_algorithm.py``).

The setting is read by every ``conv2d`` call: from the environment variable
``SCRATCHNET_CONV_ALGORITHM`` (checked at the first convolution), or as set
with::

    conv_algorithm("direct")                 # from now on, in this thread

    with conv_algorithm("winograd"):         # inside the block; restored after
        y, backprop = sn.ops.conv2d(x, w)

As ``use_backend``, it is per thread, each thread starting from the
environment variable. The backward pass of a ``conv2d`` call runs the
algorithm its forward pass ran, whatever the setting is by then.

This module is a leaf: it imports nothing from scratchnet.
"""
from __future__ import annotations

import os
import threading


class Configurable:
    """``get_config()`` returns the constructor's arguments; ``repr`` shows them."""

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# --- the convolution algorithm ------------------------------------------------

#: The environment variable that sets the default convolution algorithm.
CONV_ALGORITHM_ENV = "SCRATCHNET_CONV_ALGORITHM"
CONV_ALGORITHMS = ("auto", "direct", "winograd")

_conv_state = threading.local()  # _conv_state.algorithm: this thread's setting, once read or set


def _check_conv_algorithm(name, where):
    """``name``, lower-cased, when it is one of CONV_ALGORITHMS; else a ValueError naming ``where`` it came from."""
    choices = ", ".join(map(repr, CONV_ALGORITHMS))
    if not isinstance(name, str):
        raise TypeError(f"{where}: the convolution algorithm must be a string ({choices}), got {type(name).__name__}")
    value = name.strip().lower()
    if value not in CONV_ALGORITHMS:
        raise ValueError(f"{where}: unknown convolution algorithm {name!r}; choose one of {choices}")
    return value


def get_conv_algorithm():
    """This thread's convolution algorithm setting: ``"auto"``, ``"direct"`` or ``"winograd"``.

    The first call in a thread reads ``$SCRATCHNET_CONV_ALGORITHM`` (default ``auto``).
    """
    value = getattr(_conv_state, "algorithm", None)
    if value is None:
        raw = os.environ.get(CONV_ALGORITHM_ENV, "").strip() or "auto"
        value = _check_conv_algorithm(raw, f"{CONV_ALGORITHM_ENV}={os.environ.get(CONV_ALGORITHM_ENV)!r}")
        _conv_state.algorithm = value
    return value


class conv_algorithm:
    """Choose the convolution algorithm: ``"auto"``, ``"direct"`` or ``"winograd"`` (module docstring).

    Works as a plain call, which switches for good (in this thread)::

        conv_algorithm("direct")

    and as a context manager, which restores the previous setting on exit::

        with conv_algorithm("winograd"):
            model.fit(x, y)
    """

    def __init__(self, name="auto"):
        self._previous = getattr(_conv_state, "algorithm", None)  # None: not read yet (the variable is read next time)
        self.name = _check_conv_algorithm(name, "conv_algorithm")
        _conv_state.algorithm = self.name

    def __enter__(self):
        return self.name

    def __exit__(self, *exc):
        _conv_state.algorithm = self._previous
        return False

    def __repr__(self):
        return f"conv_algorithm({self.name!r})"
