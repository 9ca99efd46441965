"""Embedding: integer ids to rows of a table."""
from __future__ import annotations


import numpy

from .. import initializers, ops, regularizers
from .._checks import check_ids
from ..backend import get_backend
from ..serialization import initializer_config, register
from ._args import positive_int
from .base import Layer, as_backend_array


@register
class Embedding(Layer):
    """Row lookup: integer ids of any shape ``S`` -> ``S + (output_dim,)``.

    Keras's default initializer is ``uniform`` (U(-0.05, 0.05)). ``backprop``
    adds the (scatter-summed) table gradient and returns ``None``.

    ``mask_zero=True`` (Keras's): id 0 is padding, and the output's mask
    (:meth:`compute_mask`) is ``ids != 0``; the layers after it that take masks
    (LSTM, GRU, SimpleRNN, Bidirectional, MultiHeadAttention, the losses and
    metrics) skip those positions. Row 0 of the table is still looked up there.
    """

    takes_ids = True

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 mask_zero=False, name=None, dtype=None):
        super().__init__(name, dtype)
        if not isinstance(mask_zero, (bool, numpy.bool_)):
            raise ValueError(f"Embedding: mask_zero must be True or False, got {mask_zero!r}")
        self.mask_zero = bool(mask_zero)
        self.input_dim = positive_int("Embedding", "input_dim", input_dim)
        self.output_dim = positive_int("Embedding", "output_dim", output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer,
                                          regularizer=self.embeddings_regularizer)

    def ids_of(self, x):
        """``x`` as integer ids: float ids (a float dataset) are taken when whole and in range, never truncated."""
        if x.dtype.kind != "f":
            return x
        return check_ids("Embedding", get_backend(), "ids", x, self.input_dim, f"input_dim is {self.input_dim}",
                         floats=True)

    def compute_mask(self, x, mask=None):
        """``ids != 0`` with ``mask_zero`` (Keras's), else None; the input's own mask is dropped, as in Keras."""
        if not self.mask_zero:
            return None
        return as_backend_array(x, self.dtype) != 0

    def call(self, x, training=False):
        Y, embedding_backprop = ops.embedding(self.ids_of(x), self.embeddings.value)

        def backprop(dY):
            self.embeddings.accumulate(embedding_backprop(dY), fresh=True)  # a new array
            return None

        return Y, backprop

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": initializer_config(self.embeddings_initializer),
                "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer),
                "mask_zero": self.mask_zero}
