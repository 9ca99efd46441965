"""Comparing implementations: ``check_backends`` (every backend against NumPy) and ``check_against`` (two functions).

Finite differences check a gradient up to the step's precision and accept
either side at a kink; a comparison checks an implementation against a
reference to the last bits of its dtype, and pins down conventions (which
maximum of a tie receives the gradient).
"""
from __future__ import annotations

import numpy as np

from ..backend import available_backends, get_backend, use_backend
from .calling import (Deterministic, call_backprop, fn_name, input_names, is_float, on_host, output_names, per_input,
                      prepare_dy, seeded_rng, split_outputs)
from .report import ComparisonReport, Difference, GradcheckError, comparison_error

# Tolerances of a comparison between two implementations, by dtype: (rtol, atol).
COMPARE_TOLERANCES = {np.dtype(np.float64): (1e-9, 1e-11), np.dtype(np.float32): (1e-4, 1e-5)}


def _run_impl(fn, host_inputs, dys, det, spread=True):
    """``(outputs, per-input gradients)`` on the host, for ``fn`` on the current backend."""
    xp = get_backend().xp
    args = [None if a is None else xp.asarray(a) for a in host_inputs]
    y, backprop = det.call(fn, *args)
    outputs_dev, is_tuple = split_outputs(y)
    outputs = [on_host(o) for o in outputs_dev]
    if dys is None:
        return outputs, outputs_dev, is_tuple, None
    raw = det.call(call_backprop, backprop, dys, outputs_dev, is_tuple, xp, spread)
    return outputs, outputs_dev, is_tuple, raw


def _tolerances(dtype, rtol, atol):
    r, a = COMPARE_TOLERANCES.get(np.dtype(dtype), (0.0, 0.0))
    return (r if rtol is None else float(rtol)), (a if atol is None else float(atol))


def _difference(label, kind, name, got, want, rtol, atol):
    if got is None or want is None:
        if got is None and want is None:
            return None
        which = "the reference" if want is None else label
        raise GradcheckError(f"{label}: {kind} {name!r} is None for {which} only", [name])
    if got.shape != want.shape:
        raise GradcheckError(f"{label}: {kind} {name!r} has shape {got.shape}, the reference's {want.shape}", [name])
    if got.dtype != want.dtype:
        raise GradcheckError(f"{label}: {kind} {name!r} is {got.dtype}, the reference's is {want.dtype}", [name])
    r, a = _tolerances(want.dtype, rtol, atol)
    g, w = got.astype(np.float64), want.astype(np.float64)
    if not g.size:
        return Difference(label, kind, name, str(want.dtype), 0.0, 0.0, r, a)
    scale = max(1.0, float(np.nanmax(np.abs(w)))) if np.isfinite(w).any() else 1.0
    both_nan = np.isnan(g) & np.isnan(w)
    diff = np.where(both_nan, 0.0, np.abs(g - w))
    diff = np.where(np.isnan(diff), np.inf, diff)
    tol = a * scale + r * np.abs(w)
    # As for finite differences: below where atol takes over, a relative difference means nothing.
    rel = diff / np.maximum(np.abs(w), max(a * scale / r if r > 0 else a * scale, 1e-300))
    worst = np.unravel_index(int(np.argmax(diff - tol)), w.shape)
    return Difference(label, kind, name, str(want.dtype), float(np.max(diff)), float(np.max(rel)), r, a,
                      tuple(int(k) for k in worst), float(g[worst]), float(w[worst]), bool(np.all(diff <= tol)))


def _compare(title, label, impl, ref, out_names, names, floats, rtol, atol):
    rows = []
    for name, got, want in zip(out_names, impl[0], ref[0]):
        rows.append(_difference(label, "output", name, got, want, rtol, atol))
    if impl[1] is not None:
        for k, (name, got, want) in enumerate(zip(names, impl[1], ref[1])):
            if floats[k]:
                rows.append(_difference(label, "gradient", name, on_host(got), on_host(want), rtol, atol))
    return [r for r in rows if r is not None]


def _comparison(caller, fn, reference, inputs, dy, rtol, atol, seed, backends):
    """Run ``reference`` on the numpy backend (or the current one), then ``fn`` on each backend; compare."""
    names, n_positional = input_names(fn, len(inputs))
    host = [on_host(a) for a in inputs]
    floats = [is_float(a) for a in host]
    with Deterministic() as det:
        ref_backend = "numpy" if backends is not None else get_backend().name
        with use_backend(ref_backend):
            outputs, outputs_dev, is_tuple, _ = _run_impl(reference, host, None, det)
            out_names = output_names(len(outputs), is_tuple)
            dys = prepare_dy(caller, dy, outputs, out_names, is_tuple, seeded_rng(seed, "dy"))
            _, _, _, raw = _run_impl(reference, host, dys, det)
            ref = (outputs, per_input(caller, raw, names, floats, n_positional))
        rows = []
        for name in backends if backends is not None else [ref_backend]:
            label = name if backends is not None else f"{fn_name(fn)} on {name}"
            with use_backend(name):
                outs, _, tup, raw = _run_impl(fn, host, dys, det)
                if tup != is_tuple or len(outs) != len(outputs):
                    raise GradcheckError(f"{caller}: {label} returns {len(outs)} outputs, the reference {len(outputs)}",
                                         out_names)
                impl = (outs, per_input(caller, raw, names, floats, n_positional))
            rows += _compare(caller, label, impl, ref, out_names, names, floats, rtol, atol)
    ref_label = f"{fn_name(reference)} on {ref_backend}"
    report = ComparisonReport(caller, rows, ref_label)
    if not report.passed:
        raise comparison_error(report)
    return report


def check_backends(fn, *inputs, dy=None, rtol=None, atol=None, seed=0, backends=None):
    """Run ``fn`` and its backprop on every available backend and compare with the NumPy reference.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs) -> (y, backprop)``, as for :func:`check_op`.
    *inputs : arrays (host NumPy arrays), or None
        Passed to every backend in their own dtype (float32 is compared in float32).
    dy : array or tuple of (array or None), optional
        Default: random normal (from ``seed``), cast to each output's dtype.
    rtol, atol : float, optional
        Default by dtype: float64 ``1e-9``, ``1e-11``; float32 ``1e-4``, ``1e-5``;
        integers exactly. ``|got - want| <= atol * max(1, max |want|) + rtol * |want|``.
    backends : list of str, optional
        Default ``sn.available_backends()`` other than ``"numpy"``.

    Returns
    -------
    ComparisonReport
        One :class:`Difference` per backend, per output and per float input's
        gradient: the largest absolute and relative differences.

    Raises
    ------
    GradcheckError
        A backend's output or gradient differs beyond tolerance (the message
        names the backend, the output or input, and the worst index), or has
        another shape or dtype.

    Notes
    -----
    Every run starts from the same state of ``scratchnet.random``, so unseeded
    dropout draws the same mask on the CPU backends; the CuPy backend draws its
    masks on the device, so dropout differs there by design.
    """
    names = [b for b in (available_backends() if backends is None else backends) if b != "numpy"]
    return _comparison(f"check_backends({fn_name(fn)})", fn, fn, inputs, dy, rtol, atol, seed, names)


def check_against(fn, reference, *inputs, dy=None, rtol=None, atol=None, seed=0):
    """Compare ``fn`` with a reference implementation on the current backend: outputs and gradients.

    Finite differences accept either side at a non-differentiable point; this
    pins down the convention (a max-pool tie routed to the first maximum, as
    TensorFlow does).

    Parameters
    ----------
    fn, reference : callable
        Both ``f(*inputs) -> (y, backprop)``, with the same outputs and gradients.
    *inputs, dy, rtol, atol, seed
        As for :func:`check_backends`.

    Returns
    -------
    ComparisonReport

    Raises
    ------
    GradcheckError
        Naming the output or input whose result differs, and the worst index.
    """
    caller = f"check_against({fn_name(fn)}, {fn_name(reference)})"
    return _comparison(caller, fn, reference, inputs, dy, rtol, atol, seed, None)
