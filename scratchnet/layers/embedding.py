"""Embedding: integer ids to rows of a table."""
from __future__ import annotations


from .. import initializers, ops, regularizers
from .._checks import check_ids
from ..backend import get_backend
from ..serialization import initializer_config, register
from ._args import positive_int
from .base import Layer


@register
class Embedding(Layer):
    """Row lookup: integer ids of any shape ``S`` -> ``S + (output_dim,)``.

    Keras's default initializer is ``uniform`` (U(-0.05, 0.05)). ``backprop``
    adds the (scatter-summed) table gradient and returns ``None``.
    """

    takes_ids = True

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 name=None, dtype=None):
        super().__init__(name, dtype)
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

    def call(self, x, training=False):
        Y, embedding_backprop = ops.embedding(self.ids_of(x), self.embeddings.value)

        def backprop(dY):
            self.embeddings.accumulate(embedding_backprop(dY), fresh=True)  # a new array
            return None

        return Y, backprop

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": initializer_config(self.embeddings_initializer),
                "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer)}
