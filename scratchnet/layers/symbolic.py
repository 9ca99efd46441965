"""``SymbolicTensor``: a placeholder for an array in a model being defined (Keras's ``KerasTensor``),
and the ``Node``, the layer call, that made it.

``sn.Input(shape)`` makes one; calling a layer on it makes another, and a
:class:`scratchnet.Model` built from ``(inputs, outputs)`` runs the graph of
calls between them (:mod:`scratchnet.model.functional`). This module only
defines the placeholder, so that :meth:`scratchnet.Layer.__call__` can tell it
from an array without importing the models.
"""
from __future__ import annotations

import itertools


class SymbolicTensor:
    """The output ``index`` of the call ``node`` (or a model input when ``node`` is an input node).

    Attributes
    ----------
    shape : tuple
        Keras's shape, batch axis ``None``.
    dtype : numpy.dtype
    example : array
        A batch of one example of this shape, as the call produced it from
        zeros: how layers downstream are built and their shapes found.
    """

    def __init__(self, shape, dtype, node, index, example):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.node = node
        self.index = index
        self.example = example

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def name(self):
        return self.node.name if len(self.node.outputs) <= 1 else f"{self.node.name}:{self.index}"

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape} dtype={self.dtype} from {self.node.name!r}>"

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self!r} is a placeholder of a model being defined, not an array: call layers on it and "
                        f"build sn.Model(inputs, outputs); then call the model on arrays")


def is_symbolic(value):
    """Whether ``value`` is a SymbolicTensor or a list/tuple holding one."""
    if isinstance(value, SymbolicTensor):
        return True
    return isinstance(value, (list, tuple)) and any(isinstance(v, SymbolicTensor) for v in value)


_counter = itertools.count()


class Node:
    """One call of ``layer`` on placeholders (``layer is None``: a model input).

    ``x`` and ``kwargs`` are the call's arguments with each placeholder in
    place; ``inputs`` lists the placeholders in the order the layer's
    ``backprop`` returns their gradients: ``x`` (or its list), then the
    keyword arguments' in their given order.
    """

    def __init__(self, layer, x, kwargs, training, name):
        self.order = next(_counter)
        self.layer, self.x, self.kwargs, self.training, self.name = layer, x, kwargs, training, name
        self.inputs = flat(x) + [t for v in kwargs.values() for t in flat(v)]
        self.outputs = []


def flat(value):
    if isinstance(value, SymbolicTensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, SymbolicTensor)]
    return []
