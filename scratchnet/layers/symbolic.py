"""``SymbolicTensor``: a placeholder for an array in a model being defined (Keras's ``KerasTensor``).

``sn.Input(shape)`` makes one; calling a layer on it makes another, and a
:class:`scratchnet.Model` built from ``(inputs, outputs)`` runs the graph of
calls between them (:mod:`scratchnet.model.functional`). This module only
defines the placeholder, so that :meth:`scratchnet.Layer.__call__` can tell it
from an array without importing the models.
"""
from __future__ import annotations


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
