"""The Transformer's two building blocks as layers: token and position embeddings, and a block.

``TokenAndPositionEmbedding`` and ``TransformerBlock`` follow KerasNLP's
``TokenAndPositionEmbedding`` and ``TransformerDecoder`` (without
cross-attention): a character Transformer is a :class:`~scratchnet.Sequential`
of one embedding, a few blocks and a ``Dense`` to the vocabulary.
"""
from __future__ import annotations

import numpy

from .. import initializers, ops
from .._checks import check_fraction
from ..backend import get_backend
from ..serialization import initializer_config, register
from ._args import activation_name, positive_int
from .attention import MultiHeadAttention
from .base import Layer
from .core import Dense
from .embedding import Embedding
from .normalization import LayerNormalization


@register
class TokenAndPositionEmbedding(Layer):
    """``y[n, t] = token_embedding[ids[n, t]] + position_embedding[t]``: learned token and position embeddings.

    Parameters
    ----------
    vocabulary_size : int
    sequence_length : int
        The longest sequence; positions ``0 .. sequence_length - 1`` have an embedding each.
    embedding_dim : int
    embeddings_initializer : name or callable
        For both tables (KerasNLP's default, ``uniform``, is Keras's
        ``RandomUniform(-0.05, 0.05)``; the default here is the same).

    mask_zero : bool
        KerasNLP's: id 0 is padding, and the output's mask is ``ids != 0`` (as ``Embedding(mask_zero=True)``).

    Input integer ids (N, T) with ``T <= sequence_length``; output (N, T, embedding_dim).
    Weights: ``token_embedding/embeddings`` (V, D), ``position_embedding/embeddings`` (sequence_length, D).
    """

    takes_ids = True

    def __init__(self, vocabulary_size, sequence_length, embedding_dim, embeddings_initializer="uniform",
                 mask_zero=False, name=None, dtype=None):
        super().__init__(name, dtype)
        self.mask_zero = bool(mask_zero)
        self.vocabulary_size = positive_int("TokenAndPositionEmbedding", "vocabulary_size", vocabulary_size)
        self.sequence_length = positive_int("TokenAndPositionEmbedding", "sequence_length", sequence_length)
        self.embedding_dim = positive_int("TokenAndPositionEmbedding", "embedding_dim", embedding_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.token_embedding = self._add_part(Embedding(self.vocabulary_size, self.embedding_dim,
                                                        self.embeddings_initializer, mask_zero=self.mask_zero,
                                                        name="token_embedding", dtype=dtype))

    def compute_mask(self, x, mask=None):
        return self.token_embedding.compute_mask(x, mask)

    def _all_parameters(self):  # KerasNLP's order: the token table, then the positions
        yield from self.token_embedding._all_parameters()
        yield from self._weights

    def _as_input(self, x):
        return self.token_embedding._as_input(x)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"TokenAndPositionEmbedding {self.name!r}: ids must have shape [N, T], got {input_shape}")
        self.positions = self.add_weight("position_embedding/embeddings", (self.sequence_length, self.embedding_dim),
                                         self.embeddings_initializer)

    def call(self, ids, training=False):
        T = ids.shape[1]
        if T > self.sequence_length:
            raise ValueError(f"TokenAndPositionEmbedding {self.name!r}: the ids have {T} positions (ids: "
                             f"{tuple(ids.shape)}) but the layer embeds at most sequence_length={self.sequence_length}")
        tokens, token_backprop = self.token_embedding.forward(ids, training)
        y = tokens + self.positions.value[:T]

        def backprop(dy):
            dpositions = get_backend().xp.zeros_like(self.positions.value)
            dpositions[:T] = dy.sum(axis=0)  # every sequence of the batch adds to the positions it used
            self.positions.accumulate(dpositions, fresh=True)
            token_backprop(dy)
            return None

        return y, backprop

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size,
                "sequence_length": self.sequence_length, "embedding_dim": self.embedding_dim,
                "embeddings_initializer": initializer_config(self.embeddings_initializer), "mask_zero": self.mask_zero}


@register
class TransformerBlock(Layer):
    """One Transformer block: self-attention and a position-wise feed-forward network, each with a residual.

    Post-norm (``normalize_first=False``, the original Transformer's and KerasNLP's default)::

        h = LayerNorm(x + Dropout(MultiHeadAttention(x)))
        y = LayerNorm(h + Dropout(Dense_D(activation(Dense_F(h)))))

    Pre-norm (``normalize_first=True``, GPT-2's; easier to train without warm-up)::

        h = x + Dropout(MultiHeadAttention(LayerNorm(x)))
        y = h + Dropout(Dense_D(activation(Dense_F(LayerNorm(h)))))

    Parameters
    ----------
    num_heads : int
    intermediate_dim : int
        F, the feed-forward network's hidden size.
    key_dim : int, optional
        Each head's depth; default ``D // num_heads`` (D: the input's last axis).
    dropout : float in [0, 1)
        On the attention weights and on both residual branches, in training.
    activation : str
        Of the feed-forward network's hidden layer: ``"relu"`` (KerasNLP's
        default, fused into the dense kernel) or ``"gelu"`` (GPT-2's, BERT's).
    causal : bool
        Each position attends to itself and earlier ones only (a language model).
    normalize_first : bool
    layer_norm_epsilon : float
        KerasNLP's default, 1e-5.

    The backward of a residual ``y = x + f(x)`` is ``dx = dy + f'(x)^T dy``: the
    gradient reaches ``x`` along the identity unchanged, which is why deep stacks of
    blocks train.

    Masks: given the input's padding mask (``mask=``, from a ``mask_zero``
    embedding), the self-attention gets it as its query's and value's mask
    (:class:`MultiHeadAttention`), so no position attends to padding; the
    output's mask is the input's.
    """

    takes_mask = True
    supports_masking = True

    def __init__(self, num_heads, intermediate_dim, key_dim=None, dropout=0.0, activation="relu", causal=True,
                 normalize_first=False, layer_norm_epsilon=1e-5, name=None, dtype=None):
        super().__init__(name, dtype)
        self.num_heads = positive_int("TransformerBlock", "num_heads", num_heads)
        self.intermediate_dim = positive_int("TransformerBlock", "intermediate_dim", intermediate_dim)
        self.key_dim = None if key_dim is None else positive_int("TransformerBlock", "key_dim", key_dim)
        check_fraction("TransformerBlock", "dropout", dropout)
        self.dropout = float(dropout)
        self.activation = activation_name("TransformerBlock", activation)
        self.causal = bool(causal)
        self.normalize_first = bool(normalize_first)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"TransformerBlock {self.name!r}: input must have shape [N, T, D], got {input_shape}")
        D = input_shape[-1]
        key_dim = self.key_dim or D // self.num_heads
        if key_dim < 1:
            raise ValueError(f"TransformerBlock {self.name!r}: D={D} is smaller than num_heads={self.num_heads}; "
                             "give key_dim")
        dtype = self.dtype
        self.attention = self._add_part(MultiHeadAttention(self.num_heads, key_dim, dropout=self.dropout,
                                                      name="self_attention", dtype=dtype))
        self.attention_norm = self._add_part(LayerNormalization(epsilon=self.layer_norm_epsilon,
                                                           name="self_attention_layer_norm", dtype=dtype))
        self.intermediate = self._add_part(Dense(self.intermediate_dim, activation=self.activation,
                                            name="feedforward_intermediate_dense", dtype=dtype))
        self.output_dense = self._add_part(Dense(D, name="feedforward_output_dense", dtype=dtype))
        self.feedforward_norm = self._add_part(LayerNormalization(epsilon=self.layer_norm_epsilon,
                                                             name="feedforward_layer_norm", dtype=dtype))

    def _dropout(self, x, training):
        if not (training and self.dropout):
            return x, (lambda dy: dy)
        return ops.dropout(x, self.dropout)

    def _residual(self, x, branch, norm, training):
        """``(y, backprop)`` of one residual sub-block: ``branch`` with dropout, the norm before or after."""
        if self.normalize_first:
            n, norm_backprop = norm.forward(x, training)
            b, branch_backprop = branch(n, training)
            d, dropout_backprop = self._dropout(b, training)
            y = x + d

            def backprop(dy):
                return dy + norm_backprop(branch_backprop(dropout_backprop(dy)))
        else:
            b, branch_backprop = branch(x, training)
            d, dropout_backprop = self._dropout(b, training)
            y, norm_backprop = norm.forward(x + d, training)

            def backprop(dy):
                ds = norm_backprop(dy)
                return ds + branch_backprop(dropout_backprop(ds))

        return y, backprop

    def _attend(self, x, training, mask=None):
        masked = {} if mask is None else {"mask": mask}
        return self.attention.forward(x, training, use_causal_mask=self.causal, **masked)

    def _feedforward(self, x, training):
        f, intermediate_backprop = self.intermediate.forward(x, training)
        y, output_backprop = self.output_dense.forward(f, training)
        return y, (lambda dy: intermediate_backprop(output_backprop(dy)))

    def call(self, x, training=False, mask=None):
        def attend(n, training):
            return self._attend(n, training, mask)

        h, attention_backprop = self._residual(x, attend, self.attention_norm, training)
        y, feedforward_backprop = self._residual(h, self._feedforward, self.feedforward_norm, training)

        def backprop(dy):
            return attention_backprop(feedforward_backprop(dy))

        return y, backprop

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim,
                "key_dim": self.key_dim, "dropout": self.dropout, "activation": self.activation,
                "causal": self.causal,
                "normalize_first": self.normalize_first, "layer_norm_epsilon": self.layer_norm_epsilon}


def sine_position_encoding(length, depth, max_wavelength=10000.0, dtype=numpy.float32):
    """The Transformer paper's fixed position encoding, (length, depth): ``sin`` on even and ``cos`` on odd channels.

    ``pe[t, 2i] = sin(t / max_wavelength^(2i / depth))``, ``pe[t, 2i + 1] = cos(t / max_wavelength^(2i / depth))``
    (KerasNLP's ``SinePositionEncoding``). It has no weights: add it to the embeddings.
    """
    length = positive_int("sine_position_encoding", "length", length)
    depth = positive_int("sine_position_encoding", "depth", depth)
    t = numpy.arange(length, dtype=numpy.float64)[:, None]
    i = numpy.arange(depth)
    rates = 1.0 / numpy.power(float(max_wavelength), (2 * (i // 2)) / depth)
    angles = t * rates
    return numpy.where(i % 2 == 0, numpy.sin(angles), numpy.cos(angles)).astype(dtype)
