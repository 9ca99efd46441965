"""Calling a ``(y, backprop)`` function for a check: its inputs' names, its outputs, dy, and its gradients.

The checks call functions of many shapes: an op with one output or a tuple of
outputs (``sn.ops.lstm``), a backprop that returns one gradient or a tuple,
integer inputs without a gradient, randomness drawn from ``scratchnet.random``.
The helpers here turn each call into the same thing: host float64 arrays, one
per output and one gradient (or None) per input, with errors that name the
input or output at fault.
"""
from __future__ import annotations

import inspect

import numpy as np

from .. import random as _random
from ..backend import to_numpy
from .report import GradcheckError


def input_names(fn, n):
    """The parameter names of ``fn`` for ``n`` positional inputs (``inputs[i]`` past them, for ``*args``).

    Also returns how many positional parameters ``fn`` has in all (0 when unknown).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [f"inputs[{i}]" for i in range(n)], 0
    names = []
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        names.append(p.name)
    return [names[i] if i < len(names) else f"inputs[{i}]" for i in range(n)], len(names)


def fn_name(fn):
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__name__", type(inner).__name__)


def is_float(a):
    return a is not None and a.dtype.kind == "f"


def on_host(a):
    """``a`` as a host NumPy array (None kept)."""
    if a is None:
        return None
    return np.asarray(to_numpy(a))


def split_outputs(y):
    """``(list of outputs, is_tuple)``."""
    if isinstance(y, (tuple, list)):
        return list(y), True
    return [y], False


def output_names(n, is_tuple):
    return [f"y[{k}]" for k in range(n)] if is_tuple else ["y"]


def prepare_dy(caller, dy, outputs, names, is_tuple, rng):
    """One host float64 array (or None) per output; random normal by default."""
    if dy is None:
        return [np.asarray(rng.standard_normal(y.shape), np.float64) if is_float(y) else None for y in outputs]
    if is_tuple:
        if not isinstance(dy, (tuple, list)) or len(dy) != len(outputs):
            got = f"{len(dy)} entries" if isinstance(dy, (tuple, list)) else type(dy).__name__
            raise ValueError(f"{caller}: fn returns {len(outputs)} outputs ({', '.join(names)}), so dy must be a "
                             f"tuple of {len(outputs)} arrays or None; got {got}")
        dys = list(dy)
    else:
        dys = [dy]
    out = []
    for name, y, d in zip(names, outputs, dys):
        if d is None:
            out.append(None)
            continue
        if not is_float(y):
            raise ValueError(f"{caller}: output {name} is {y.dtype}, not float; its dy must be None")
        d = np.asarray(on_host(d), np.float64)
        if d.shape != y.shape:
            raise ValueError(f"{caller}: dy for output {name} must have its shape {y.shape}, got {d.shape}")
        out.append(d)
    return out


def call_backprop(backprop, dys, outputs_dev, is_tuple, xp, spread):
    """Call ``backprop`` with dy on the backend, in each output's dtype.

    ``spread``: ``backprop(*dy)`` for tuple outputs (the ops' convention) rather
    than ``backprop(list_of_dy)`` (the layers').
    """
    dev = [None if d is None else xp.asarray(d.astype(_host_dtype(y))) for d, y in zip(dys, outputs_dev)]
    if not is_tuple:
        return backprop(dev[0])
    return backprop(*dev) if spread else backprop(dev)


def _host_dtype(y):
    return np.dtype(getattr(y, "dtype", np.float64))


def per_input(caller, raw, names, floats, n_positional=0):
    """Map what backprop returned to one gradient (or None) per input.

    Gradients past the inputs given are dropped when they belong to optional
    inputs left out: to parameters of ``fn`` left at their defaults
    (``lstm``'s ``h0``, ``c0``; ``n_positional`` is the number of positional
    parameters), or ``None`` (what an op returns for an input it was not
    given: ``lambda x, w: sn.ops.conv2d(x, w, padding="SAME")`` gets
    ``(dx, dw, None)``, the ``None`` for ``b``).
    """
    n, float_ix = len(names), [i for i, f in enumerate(floats) if f]
    if isinstance(raw, (tuple, list)):
        raw = list(raw)
        if len(raw) == n or n < len(raw) <= n_positional or (len(raw) > n and all(g is None for g in raw[n:])):
            return raw[:n]
        if len(raw) == len(float_ix):
            grads = [None] * n
            for i, g in zip(float_ix, raw):
                grads[i] = g
            return grads
        extra = ""
        if len(raw) > n:
            extra = (f"; the {len(raw) - n} past the last input are not None (an op's gradients for optional inputs "
                     f"the function does not take: give the function those parameters, or return grads[:{n}])")
        raise GradcheckError(
            f"{caller}: backprop returned {len(raw)} gradients for {n} inputs ({', '.join(names)}); return one per "
            f"input (None for those without a gradient){extra}", [names[i] for i in float_ix])
    if n == 1:
        return [raw]
    if len(float_ix) == 1:
        grads = [None] * n
        grads[float_ix[0]] = raw
        return grads
    raise GradcheckError(
        f"{caller}: backprop returned one gradient for {len(float_ix)} float inputs "
        f"({', '.join(names[i] for i in float_ix)}); return one per input (None for those without a gradient), "
        f"or close over the constants", [names[i] for i in float_ix])


def validate_grad(caller, kind, name, g, value):
    """The analytic gradient as a host float64 array of ``value``'s shape, or a GradcheckError."""
    if g is None:
        raise GradcheckError(f"{caller}: backprop returned no gradient (None) for float {kind} {name!r} "
                             f"{tuple(value.shape)}", [name])
    dtype = getattr(g, "dtype", None)
    if dtype is None or np.dtype(dtype).kind != "f":
        what = type(g).__name__ if dtype is None else f"an array of dtype {dtype}"
        raise GradcheckError(f"{caller}: the gradient for {kind} {name!r} is {what}, not a float array", [name])
    g = on_host(g)
    if g.shape != value.shape:
        raise GradcheckError(f"{caller}: the gradient for {kind} {name!r} has shape {g.shape}, but the {kind} "
                             f"has shape {value.shape}", [name])
    if g.dtype != value.dtype:
        raise GradcheckError(f"{caller}: the gradient for {kind} {name!r} is {g.dtype}, but the {kind} is "
                             f"{value.dtype}", [name])
    return g.astype(np.float64)


def check_float64_outputs(caller, outputs, names):
    for name, y in zip(names, outputs):
        if is_float(y) and y.dtype != np.float64:
            raise GradcheckError(
                f"{caller}: output {name} is {y.dtype} although every float input is float64: the function "
                f"computes in {y.dtype} somewhere (a {y.dtype} constant or weight?); finite differences need "
                f"float64 throughout", [name])


def seeded_rng(seed, purpose):
    """A generator for ``purpose``, from ``seed``: a stream of its own, so that data drawn with
    ``default_rng(seed)`` by the caller is never the dy or the direction (``dy == x`` would
    make ``x.T @ dy`` symmetric and hide a transposed gradient)."""
    return np.random.default_rng([int(seed), sum(map(ord, purpose)), 0x9C4A])


class Deterministic:
    """Runs a function from the same global-generator state every time, and notices non-determinism."""

    def __init__(self):
        self.state = _random.get_state()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _random.set_state(self.state)
        return False

    def call(self, f, *args, **kwargs):
        _random.set_state(self.state)
        return f(*args, **kwargs)


def same_outputs(caller, first, again, names, hint):
    for name, a, b in zip(names, first, again):
        if a is None or b is None:
            continue
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
            diff = float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else float("nan")
            raise GradcheckError(
                f"{caller}: the function is not deterministic: output {name} changed between two evaluations "
                f"at the same point (max difference {diff:.3e}); {hint}", [name])
