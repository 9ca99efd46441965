"""Parameters and the stores and scopes that name them.

A :class:`Parameter` is a named weight with its accumulated gradient. Layers
ADD each gradient to ``p.grad`` (``p.accumulate(g)``), which makes sharing
correct by construction: a layer called twice, or a parameter used by two
models, receives the sum of the gradients of every use.

Parameters are named hierarchically (``dense/kernel``, ``layer1/weights``) and
live in a :class:`ParameterStore`. Each outermost model has a private store,
unless it is created inside ``store.scope(name, reuse=...)``; TensorFlow 1's
``variable_scope`` / ``get_variable`` rules then apply: creating a name that
is taken is an error unless ``reuse=True``, and reusing a name that does not
exist is an error too. That is how a training model and a sampling model (batch
1, one step) share one set of weights::

    store = sn.ParameterStore()
    with store.scope("lm"):
        train_model = make_model(batch_size=32)
    with store.scope("lm", reuse=True):
        sample_model = make_model(batch_size=1)
"""
from __future__ import annotations

import contextlib
import re
import threading

from .backend import get_backend

class Parameter:
    """A named weight: its value, its accumulated gradient and how it is trained.

    Attributes
    ----------
    name : str
        Hierarchical name, unique in its store (``"dense/kernel"``).
    value : backend array
        May be reassigned (``set_weights`` does); optimizers update it in place.
    grad : backend array or None
        Sum of the gradients of every use since the last ``zero_grad``.
    trainable : bool
    regularizer : callable or None
        ``regularizer(value) -> float`` with a ``.gradient(value)`` method.
    """

    def __init__(self, name, value, trainable=True, regularizer=None):
        self.name = name
        self.value = value
        self.grad = None
        self.trainable = bool(trainable)
        self.regularizer = regularizer

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def dtype(self):
        return self.value.dtype

    def accumulate(self, g, fresh=False):
        """``grad += g``; the first gradient is copied, so ``g`` is never aliased or modified.

        ``fresh=True`` hands ``g`` over instead: the caller promises that it is a
        new array nothing else holds (an op's weight gradient is), so the first
        gradient becomes ``grad`` without the copy (for LeNet's 1.6-million-weight
        dense kernel, a millisecond a step). A frozen (``trainable=False``)
        parameter collects nothing.
        """
        if not self.trainable:
            return
        if tuple(g.shape) != self.shape:
            raise ValueError(f"Parameter {self.name!r}: gradient has shape {tuple(g.shape)}, the value has {self.shape}")
        if self.grad is None:
            self.grad = g.astype(self.value.dtype, copy=not fresh)
        else:
            self.grad += g

    def __repr__(self):
        return f"<Parameter {self.name!r} shape={self.shape} dtype={self.dtype}{'' if self.trainable else ' frozen'}>"


class ParameterStore:
    """Parameters by name, with ``get_variable`` / ``variable_scope`` rules.

    Layers created inside ``with store.scope(name, reuse=...)`` take their
    parameters from this store, under ``name/``. The scope in force when the
    OUTERMOST model (or a lone layer) is created is the one its whole tree
    uses, since weights are created lazily at the first call, after the
    ``with`` block has ended.

    ``reuse``: ``False`` (create; a taken name is an error), ``True`` (share;
    a missing name or a different shape is an error) or ``"auto"`` (share when
    present, create otherwise, TF's ``AUTO_REUSE``). Nested scopes join their
    names, and reuse is inherited once set, as in TensorFlow.
    """

    def __init__(self):
        self._params = {}

    def scope(self, name, reuse=None):
        """Context manager: layers created inside take their weights from here, under ``name/``."""
        if not isinstance(name, str) or not NAME.fullmatch(name.strip("/")):
            raise ValueError(f"ParameterStore.scope: name must be a non-empty string of names joined by '/', got {name!r}")
        if reuse not in (None, False, True, "auto"):
            raise ValueError(f"ParameterStore.scope: reuse must be False, True or 'auto', got {reuse!r}")
        return _scope_context(self, name.strip("/"), reuse)

    def get(self, name, shape, dtype, initializer, reuse=False, trainable=True, regularizer=None):
        """The parameter ``name``, created with ``initializer(shape, dtype)`` or reused (see the class doc)."""
        shape = tuple(int(s) for s in shape)
        existing = self._params.get(name)
        if existing is not None:
            if not reuse:
                raise ValueError(
                    f"parameter {name!r} already exists; create the model inside "
                    f"store.scope(..., reuse=True) to share it, or give the layer another name"
                )
            if existing.shape != shape:
                raise ValueError(f"parameter {name!r} is reused with shape {shape} but exists with shape {existing.shape}")
            return existing
        if reuse is True:
            near = sorted(self._params)[:8]
            raise ValueError(
                f"parameter {name!r} does not exist, so it cannot be reused (reuse=True); "
                f"the store holds {len(self._params)} parameters, e.g. {near}"
            )
        value = get_backend().xp.asarray(initializer(shape, dtype))
        p = Parameter(name, value, trainable=trainable, regularizer=regularizer)
        self._params[name] = p
        return p

    def __contains__(self, name):
        return name in self._params

    def __getitem__(self, name):
        return self._params[name]

    def __iter__(self):
        return iter(self._params.values())

    def __len__(self):
        return len(self._params)

    def __repr__(self):
        return f"<ParameterStore with {len(self._params)} parameters>"


NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_scopes = threading.local()


class _Scope:
    def __init__(self, store, prefix, reuse):
        self.store, self.prefix, self.reuse = store, prefix, reuse


@contextlib.contextmanager
def _scope_context(store, name, reuse):
    stack = _scope_stack()
    outer = stack[-1] if stack and stack[-1].store is store else None
    prefix = (outer.prefix if outer else "") + name + "/"
    # Reuse is inherited: inside a reusing scope everything reuses (TensorFlow's rule).
    inherited = outer.reuse if outer else False
    effective = reuse if reuse is not None and inherited is not True else (inherited or False)
    stack.append(_Scope(store, prefix, effective))
    try:
        yield store
    finally:
        stack.pop()


def _scope_stack():
    if not hasattr(_scopes, "stack"):
        _scopes.stack = []
    return _scopes.stack


def current_scope():
    """The innermost ``store.scope(...)`` in force on this thread, or None."""
    stack = _scope_stack()
    return stack[-1] if stack else None

