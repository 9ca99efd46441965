"""``check_op``: a function's ``backprop`` against finite differences of its inputs."""
from __future__ import annotations

import warnings

import numpy as np

from ..backend import get_backend
from .calling import (Deterministic, call_backprop, check_float64_outputs, fn_name, input_names, is_float, on_host,
                      output_names, per_input, prepare_dy, same_outputs, seeded_rng, split_outputs, validate_grad)
from .numeric import MAX_FULL, FiniteDifferences, Variable, check_settings, run_checks
from .report import GradcheckError, GradcheckWarning


def check_op(fn, *inputs, dy=None, eps=None, rtol=None, atol=None, mode="directional", seed=0,
             max_full=MAX_FULL):
    """Check the gradients ``backprop`` returns against finite differences.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs) -> (y, backprop)``, as every ``sn.ops`` op. ``y`` is an
        array (a scalar for a loss) or a tuple of arrays (``sn.ops.lstm``:
        ``(ys, h, c)``); ``backprop(dy)``, or ``backprop(*dy)`` for a tuple,
        returns one gradient per input (a tuple; a single array when there is
        one float input; ``None`` for an input without a gradient, such as
        integer ids), each of its input's shape and dtype.
    *inputs : arrays (NumPy or the current backend's), or None
        Float inputs are checked (float32 is upcast to float64 with a
        :class:`GradcheckWarning`); integer and bool inputs are passed as they
        are and never perturbed. Each is converted with ``be.xp.asarray`` for
        the current backend.
    dy : array, or tuple of (array or None), optional
        Weights of the outputs: the checked scalar is ``sum_k <y_k, dy_k>``. A
        tuple for tuple outputs; a None entry leaves that output out.
        Default: random normal of each float output's shape (from ``seed``).
    eps, rtol, atol : float, optional
        Step and tolerances; defaults ``1e-6``, ``1e-5``, ``1e-8`` (see :mod:`scratchnet.gradcheck`).
    mode : {"directional", "full"}
        One random direction per input, or every element.
    seed : int
        Seed of the default dy and of the directions.
    max_full : int
        Largest input checked element by element after a failed or non-smooth directional check.

    Returns
    -------
    GradcheckReport
        One :class:`GradientCheck` per float input, by name (``report["w"]``).

    Raises
    ------
    GradcheckError
        A gradient is wrong (the message names the input, the worst element in
        full mode, the analytic and numeric values, the relative error and the
        outputs used), missing, of the wrong shape or dtype, or the function is
        not deterministic.
    """
    eps, rtol, atol = check_settings(eps, rtol, atol, mode)
    caller = f"check_op({fn_name(fn)})"
    be = get_backend()
    xp = be.xp
    names, n_positional = input_names(fn, len(inputs))
    host = [on_host(a) for a in inputs]
    upcast = {}
    for k, (name, a) in enumerate(zip(names, host)):
        if a is None:
            continue
        if a.dtype.kind == "f" and a.dtype != np.float64:
            upcast[name] = a.dtype
            host[k] = a.astype(np.float64)
        elif a.dtype.kind not in "fiub":
            raise TypeError(f"{caller}: input {name!r} has dtype {a.dtype}; inputs must be float, integer or bool")
    if upcast:
        listed = ", ".join(f"{name} ({dtype})" for name, dtype in upcast.items())
        warnings.warn(f"{caller}: finite differences need float64; upcasting {listed}", GradcheckWarning,
                      stacklevel=2)
    floats = [is_float(a) for a in host]
    float_ix = [k for k, f in enumerate(floats) if f]
    fixed = [None if a is None else xp.asarray(a) for a in host]

    def device_inputs(values):
        args = list(fixed)
        for k, v in zip(float_ix, values):
            args[k] = xp.asarray(v)
        return args

    with Deterministic() as det:
        try:
            y, backprop = det.call(fn, *fixed)
        except Exception as e:
            if upcast:
                raise GradcheckError(
                    f"{caller}: the function failed on the float64 copies of its inputs ({type(e).__name__}: {e}); "
                    f"a function holding float32 constants or weights must use float64 ones for a gradient check",
                    list(upcast)) from e
            raise
        outputs_dev, is_tuple = split_outputs(y)
        outputs = [on_host(o) for o in outputs_dev]
        out_names = output_names(len(outputs), is_tuple)
        check_float64_outputs(caller, outputs, out_names)
        dys = prepare_dy(caller, dy, outputs, out_names, is_tuple, seeded_rng(seed, "dy"))
        raw = det.call(call_backprop, backprop, dys, outputs_dev, is_tuple, xp, True)
        grads = per_input(caller, raw, names, floats, n_positional)
        variables = [Variable("input", names[k], host[k], validate_grad(caller, "input", names[k], grads[k], host[k]))
                     for k in float_ix]

        def run(values):
            y, _ = det.call(fn, *device_inputs(values))
            return [on_host(o) for o in split_outputs(y)[0]]

        again = run([v.value for v in variables])
        same_outputs(caller, outputs, again, out_names, "seed its randomness (sn.ops.dropout(..., seed=...))")
        fd = FiniteDifferences(run, variables, dys, eps, rtol, atol, again)
        used = [n for n, d in zip(out_names, dys) if d is not None]
        note = "dy given" if dy is not None else f"dy random normal, seed {seed}"
        return run_checks(caller, fd, mode, seeded_rng(seed, "directions"), max_full, used, note)
