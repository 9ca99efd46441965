"""Op-call recording: the one hook behind ``sn.profile()`` and the TensorBoard graph.

Every public op is declared with :func:`op`::

    @recording.op("dense", cost=dense_cost)
    def dense(x, w, b=None): ...

With no recorder active (the normal case) the decorated op calls the plain
function straight away: one check of an empty list, nothing recorded and
nothing kept. Inside ``with recording.recorder(r):`` every op call is reported
to ``r``, its forward and, when ``backprop`` runs, its backward. Layers report
their scope (``layer1-conv1``) and the training step reports its other phases
(the optimizer, the regularizer, the moving average) through :func:`scope` and
:func:`region`, so a recorder sees a whole step.

A recorder implements any of these methods (each is optional)::

    op_begin(call) -> token         op_end(token, outputs)
    backward_begin(token)           backward_end(token, grads)
    scope_begin(name, obj)          scope_end(name, obj)
    region_begin(name)              region_end(name)

``call`` is an :class:`OpCall`: the op's name, its inputs bound to their
parameter names, and its cost formula.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass, field

_state = threading.local()


def active():
    """The recorders active on this thread (an empty list in the normal case)."""
    recorders = getattr(_state, "recorders", None)
    if recorders is None:
        recorders = _state.recorders = []
    return recorders


@contextlib.contextmanager
def recorder(r):
    """Report every op call on this thread to ``r`` until the block ends."""
    stack = active()
    stack.append(r)
    try:
        yield r
    finally:
        stack.remove(r)


@dataclass
class Cost:
    """Work of one op call: floating-point operations and bytes moved, forward and backward."""

    flops: float = 0.0
    bytes: float = 0.0
    backward_flops: float = 0.0
    backward_bytes: float = 0.0


def nbytes(*arrays):
    """Bytes held by the arrays (``None`` counts as 0)."""
    return float(sum(a.size * a.dtype.itemsize for a in arrays if a is not None and hasattr(a, "dtype")))


@dataclass
class OpCall:
    """One call of a public op, as a recorder sees it."""

    name: str
    inputs: dict
    cost_fn: object = None
    extra: dict = field(default_factory=dict)

    def cost(self):
        """The op's :class:`Cost` for these inputs (zero when the op has no formula)."""
        if self.cost_fn is None:
            return Cost()
        try:
            return self.cost_fn(**self.inputs)
        except (TypeError, AttributeError, ValueError):
            return Cost()


def _call(recorders, method, *args):
    """``r.method(*args)`` for each recorder that has the method; the list of what they returned."""
    out = []
    for r in recorders:
        fn = getattr(r, method, None)
        out.append(fn(*args) if fn is not None else None)
    return out


def _call_with_tokens(recorders, tokens, method, *args):
    for r, token in zip(recorders, tokens):
        fn = getattr(r, method, None)
        if fn is not None:
            fn(token, *args)


def op(name, cost=None):
    """Declare a public op ``name``: its calls reach the active recorders. ``cost(**inputs) -> Cost``."""

    def wrap(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            recorders = getattr(_state, "recorders", None)
            if not recorders:
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            now = list(recorders)
            tokens = _call(now, "op_begin", OpCall(name, dict(bound.arguments), cost))
            outputs, backprop = fn(*args, **kwargs)
            _call_with_tokens(now, tokens, "op_end", outputs)

            def recorded_backprop(*dys):
                _call_with_tokens(now, tokens, "backward_begin")
                grads = backprop(*dys)
                _call_with_tokens(now, tokens, "backward_end", grads)
                return grads

            return outputs, recorded_backprop

        recorded.op_name = name
        recorded.cost = cost
        return recorded

    return wrap


class _Span:
    """A named span (a layer's scope, or a phase of the step) reported to the recorders active at its start."""

    def __init__(self, begin, end, *args):
        self.begin, self.end, self.args = begin, end, args
        self.recorders = list(_state.recorders)

    def __enter__(self):
        _call(self.recorders, self.begin, *self.args)
        return self

    def __exit__(self, *exc):
        _call(self.recorders, self.end, *self.args)
        return False


# With no recorder active, scope() and region() return this one reusable
# do-nothing context: nothing is allocated per call.
_NOTHING = contextlib.nullcontext()


def scope(name, obj=None):
    """A named scope (a layer) around the op calls inside it: ``with recording.scope("conv1", layer):``."""
    if not getattr(_state, "recorders", None):
        return _NOTHING
    return _Span("scope_begin", "scope_end", name, obj)


def region(name):
    """A phase of a training step that is not an op (``optimizer``, ``regularizer``, ``moving_average``)."""
    if not getattr(_state, "recorders", None):
        return _NOTHING
    return _Span("region_begin", "region_end", name)


def recording():
    """True when a recorder is active on this thread (one attribute read: cheap enough for every call)."""
    return bool(getattr(_state, "recorders", None))
