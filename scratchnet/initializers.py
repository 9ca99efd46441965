"""Weight initializers, with Keras's names, defaults and formulas.

An initializer is a callable ``init(shape, dtype="float32") -> numpy.ndarray``.
Values are drawn on the host from ``scratchnet.random.generator()`` (so
``sn.random.seed(s)`` makes a whole model reproducible, on every backend), or
from a private generator when the initializer is given its own ``seed``; the
layer then copies them to the backend.

=======================  ====================================================
name                     values
=======================  ====================================================
``zeros``, ``ones``      0, 1
``constant(value)``      ``value``
``random_normal``        N(mean, stddev**2), default stddev 0.05
``truncated_normal``     N(mean, stddev**2) redrawn until within 2 stddev (TF)
``random_uniform``       U(minval, maxval), default [-0.05, 0.05]
``glorot_uniform``       U(-l, l), ``l = sqrt(6 / (fan_in + fan_out))`` (Keras's default kernel)
``glorot_normal``        truncated normal, ``stddev = sqrt(2 / (fan_in + fan_out))``
``he_normal``            truncated normal, ``stddev = sqrt(2 / fan_in)``
``he_uniform``           U(-l, l), ``l = sqrt(6 / fan_in)``
``orthogonal``           an orthogonal matrix (Keras's recurrent kernel default)
=======================  ====================================================

Fans follow Keras: a (fan_in, fan_out) matrix, and for a convolution kernel
(kh, kw, C, O) ``fan_in = kh*kw*C`` and ``fan_out = kh*kw*O``.
"""
from __future__ import annotations

import math

import numpy

from . import random as _random
from ._config import Configurable


class Initializer(Configurable):
    """Base class: subclasses implement :meth:`draw` with a ``numpy.random.Generator``."""

    def __init__(self, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)) or seed < 0):
            raise ValueError(f"{type(self).__name__}: seed must be a non-negative int or None, got {seed!r}")
        self.seed = seed

    def __call__(self, shape, dtype="float32"):
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"{type(self).__name__}: shape must be non-negative, got {shape}")
        rng = _random.generator() if self.seed is None else numpy.random.default_rng(self.seed)
        # Always row-major (C order): Orthogonal's draw is a transposed view, and a weight's memory layout picks the
        # BLAS kernel (NN or NT), whose rounding differs. A checkpoint restores weights row-major, so a weight born
        # column-major would make a resumed run round differently from an uninterrupted one.
        return numpy.asarray(self.draw(shape, rng), dtype=numpy.float64).astype(dtype, order="C")

    def draw(self, shape, rng):
        raise NotImplementedError

    def get_config(self):
        return {"seed": self.seed}


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__()
        self.value = float(value)

    def draw(self, shape, rng):
        return numpy.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class Zeros(Constant):
    def __init__(self):
        super().__init__(0.0)

    def get_config(self):
        return {}


class Ones(Constant):
    def __init__(self):
        super().__init__(1.0)

    def get_config(self):
        return {}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        _check_positive(type(self).__name__, "stddev", stddev)
        self.mean, self.stddev = float(mean), float(stddev)

    def draw(self, shape, rng):
        return rng.normal(self.mean, self.stddev, size=shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(RandomNormal):
    """Normal values more than two standard deviations from the mean are redrawn, as in TensorFlow."""

    def draw(self, shape, rng):
        return self.mean + self.stddev * _truncated_standard_normal(shape, rng)


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        if not minval < maxval:
            raise ValueError(f"RandomUniform: minval must be below maxval, got {minval} and {maxval}")
        self.minval, self.maxval = float(minval), float(maxval)

    def draw(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, size=shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(Initializer):
    """Keras's ``VarianceScaling``: variance ``scale / n`` with ``n`` from the fans.

    ``mode`` picks ``n``: ``fan_in``, ``fan_out`` or ``fan_avg``;
    ``distribution`` is ``truncated_normal`` or ``uniform``.
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        _check_positive("VarianceScaling", "scale", scale)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution not in ("truncated_normal", "uniform"):
            raise ValueError(f"VarianceScaling: distribution must be 'truncated_normal' or 'uniform', got {distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def draw(self, shape, rng):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3 * variance)
            return rng.uniform(-limit, limit, size=shape)
        # The standard deviation of a standard normal truncated to [-2, 2].
        stddev = math.sqrt(variance) / 0.87962566103423978
        return stddev * _truncated_standard_normal(shape, rng)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class GlorotUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(1.0, "fan_avg", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeNormal(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "truncated_normal", seed)

    def get_config(self):
        return {"seed": self.seed}


class HeUniform(VarianceScaling):
    def __init__(self, seed=None):
        super().__init__(2.0, "fan_in", "uniform", seed)

    def get_config(self):
        return {"seed": self.seed}


class Orthogonal(Initializer):
    """An orthogonal matrix (times ``gain``), from the QR decomposition of a normal one.

    A shape with more than two axes is treated as a (prod(shape[:-1]), shape[-1])
    matrix. The signs of R's diagonal are folded into Q so that the result is
    uniformly distributed over orthogonal matrices (Keras does the same).
    """

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = float(gain)

    def draw(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: shape must have at least 2 axes, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = numpy.linalg.qr(a)
        q *= numpy.sign(numpy.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


def compute_fans(shape):
    """``(fan_in, fan_out)`` of a weight shape, as Keras computes them."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_standard_normal(shape, rng):
    x = rng.standard_normal(size=shape)
    outside = numpy.abs(x) > 2
    while outside.any():
        x[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = numpy.abs(x) > 2
    return x


def _check_positive(op, name, value):
    if not value > 0:
        raise ValueError(f"{op}: {name} must be positive, got {value!r}")


# The lowercase factories are the names the tutorials use (``tf.truncated_normal_initializer(stddev=0.1)``).
def zeros():
    return Zeros()


def ones():
    return Ones()


def constant(value=0.0):
    return Constant(value)


def random_normal(mean=0.0, stddev=0.05, seed=None):
    return RandomNormal(mean, stddev, seed)


def truncated_normal(stddev=0.05, mean=0.0, seed=None):
    return TruncatedNormal(mean, stddev, seed)


def random_uniform(minval=-0.05, maxval=0.05, seed=None):
    return RandomUniform(minval, maxval, seed)


def glorot_uniform(seed=None):
    return GlorotUniform(seed)


def glorot_normal(seed=None):
    return GlorotNormal(seed)


def he_normal(seed=None):
    return HeNormal(seed)


def he_uniform(seed=None):
    return HeUniform(seed)


def orthogonal(gain=1.0, seed=None):
    return Orthogonal(gain, seed)


_BY_NAME = {
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "random_normal": RandomNormal,
    "truncated_normal": TruncatedNormal,
    "random_uniform": RandomUniform,
    "uniform": RandomUniform,  # Keras's name for the Embedding default
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_normal": HeNormal,
    "he_uniform": HeUniform,
    "orthogonal": Orthogonal,
    "variance_scaling": VarianceScaling,
}
_BY_CLASS = {cls.__name__: cls for cls in _BY_NAME.values()}


def get(identifier):
    """An initializer from a name (``"glorot_uniform"``), a config dict, or a callable (returned as is)."""
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"initializers.get: unknown initializer {identifier!r}; choose one of {sorted(_BY_NAME)}")
        return cls()
    if isinstance(identifier, dict):
        cls = _BY_CLASS.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"initializers.get: unknown initializer config {identifier!r}")
        return cls(**identifier.get("config", {}))
    if callable(identifier):
        return identifier
    raise ValueError(f"initializers.get: expected a name, a config dict or a callable, got {identifier!r}")


def serialize(init):
    """``{"class_name", "config"}`` for an :class:`Initializer` (the inverse of :func:`get`)."""
    if not isinstance(init, Initializer):
        raise ValueError(f"initializers.serialize: only scratchnet initializers can be serialized, got {init!r}")
    return {"class_name": type(init).__name__, "config": init.get_config()}
