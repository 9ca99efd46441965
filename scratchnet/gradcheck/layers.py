"""``check_layer``: a layer's input gradient and the gradients it accumulates into its parameters."""
from __future__ import annotations

import warnings

import numpy as np

from ..backend import get_backend
from .calling import (Deterministic, call_backprop, check_float64_outputs, on_host, output_names, prepare_dy,
                      same_outputs, seeded_rng, split_outputs, validate_grad)
from .numeric import MAX_FULL, FiniteDifferences, Variable, check_settings, run_checks
from .report import GradcheckError, GradcheckWarning


def check_layer(layer, x, dy=None, training=False, *, eps=None, rtol=None, atol=None, mode="directional", seed=0,
                max_full=MAX_FULL):
    """Check a layer's input gradient and the gradient it accumulates into each parameter.

    The layer is called as ``y, backprop = layer.forward(x, training=training)``
    and ``dx = backprop(dy)`` must return the gradient of ``x`` (when ``x`` is
    float) and add the gradient of every trainable parameter ``p`` to
    ``p.grad``. Parameters are perturbed in place in ``p.value`` and restored
    exactly; ``p.grad`` is zeroed for the check and restored afterwards.

    Parameters
    ----------
    layer : Layer
        Any object with ``forward(x, training)``, ``parameters()`` (Parameters
        with ``.name``, ``.value``, ``.grad``, ``.trainable``) and ``zero_grad()``:
        a layer or a model. It must compute in float64 (``dtype="float64"``);
        it is built by the first call if it is not yet.
    x : array
        The input. Float inputs are checked (float32 upcast with a warning);
        integer ids (Embedding) are not.
    dy : array or list of arrays, optional
        Gradient of the output (a list for a list of outputs, as an LSTM with
        ``return_state``); default random normal.
    training : bool
        Passed to ``forward``. Dropout draws from ``scratchnet.random``, whose
        state is restored before every call, so its mask is the same each time;
        other randomness is reported as non-determinism.
    eps, rtol, atol, mode, seed, max_full
        As for :func:`check_op`.

    Returns
    -------
    GradcheckReport
        ``report["x"]`` for the input, ``report["dense/kernel"]`` for a parameter.

    Raises
    ------
    GradcheckError
        Naming the input or the parameter (by its store name) whose gradient is
        wrong, missing or of the wrong shape or dtype.
    """
    eps, rtol, atol = check_settings(eps, rtol, atol, mode)
    caller = f"check_layer({getattr(layer, 'name', type(layer).__name__)})"
    xp = get_backend().xp
    xh = on_host(x)
    if xh.dtype.kind == "f" and xh.dtype != np.float64:
        warnings.warn(f"{caller}: finite differences need float64; upcasting x ({xh.dtype})", GradcheckWarning,
                      stacklevel=2)
        xh = xh.astype(np.float64)
    x_float = xh.dtype.kind == "f"
    x_dev = xp.asarray(xh)
    layer.forward(x_dev, training=training)  # builds the layer, drawing its initial weights
    with Deterministic() as det:
        params = [p for p in layer.parameters() if getattr(p, "trainable", True)]
        for p in params:
            if np.dtype(p.value.dtype) != np.float64:
                raise ValueError(f"{caller}: parameter {p.name!r} is {p.value.dtype}; finite differences need "
                                 f"float64: create the layer with dtype='float64'")
        saved_values = [p.value.copy() for p in params]
        saved_grads = [p.grad for p in params]
        try:
            layer.zero_grad()
            y, backprop = det.call(layer.forward, x_dev, training=training)
            outputs_dev, is_tuple = split_outputs(y)
            outputs = [on_host(o) for o in outputs_dev]
            out_names = output_names(len(outputs), is_tuple)
            check_float64_outputs(caller, outputs, out_names)
            dys = prepare_dy(caller, dy, outputs, out_names, is_tuple, seeded_rng(seed, "dy"))
            dx = det.call(call_backprop, backprop, dys, outputs_dev, is_tuple, xp, False)
            variables = []
            if x_float:
                variables.append(Variable("input", "x", xh, validate_grad(caller, "input", "x", dx, xh)))
            for p, value in zip(params, saved_values):
                vh = on_host(value)
                if p.grad is None:
                    raise GradcheckError(f"{caller}: backprop accumulated no gradient into parameter {p.name!r} "
                                         f"{tuple(vh.shape)} (p.grad is None after zero_grad and one backprop)",
                                         [p.name])
                variables.append(Variable("parameter", p.name, vh, validate_grad(caller, "parameter", p.name,
                                                                              p.grad, vh)))
            offset = 1 if x_float else 0

            def run(values):
                for p, v in zip(params, values[offset:]):
                    p.value[...] = xp.asarray(v)
                y, _ = det.call(layer.forward, xp.asarray(values[0]) if x_float else x_dev, training=training)
                return [on_host(o) for o in split_outputs(y)[0]]

            again = run([v.value for v in variables])
            same_outputs(caller, outputs, again, out_names,
                          "a layer with randomness of its own (or a stateful one) cannot be checked this way")
            fd = FiniteDifferences(run, variables, dys, eps, rtol, atol, again)
            used = [n for n, d in zip(out_names, dys) if d is not None]
            note = "dy given" if dy is not None else f"dy random normal, seed {seed}"
            return run_checks(caller, fd, mode, seeded_rng(seed, "directions"), max_full, used, note)
        finally:
            for p, value, grad in zip(params, saved_values, saved_grads):
                p.value[...] = value
                p.grad = grad
