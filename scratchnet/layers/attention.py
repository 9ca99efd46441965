"""MultiHeadAttention: Keras's layer, its weight layout and its call, on :func:`scratchnet.ops.attention`.

For a query sequence ``q`` (N, Tq, Dq) and a value sequence ``v`` (N, Tk, Dv)
(the key sequence ``k`` defaults to ``v``; self-attention is ``q = k = v``),
with ``h`` heads of depth ``key_dim`` (queries, keys) and ``value_dim`` (values)::

    Q[n, i, a, :] = q[n, i] @ Wq[:, a, :] + bq[a]         per head a: (N, Tq, h, key_dim)
    K[n, j, a, :] = k[n, j] @ Wk[:, a, :] + bk[a]
    V[n, j, a, :] = v[n, j] @ Wv[:, a, :] + bv[a]         (N, Tk, h, value_dim)
    A[n, a]       = attention(Q[n, :, a], K[n, :, a], V[n, :, a], scale = 1 / sqrt(key_dim))
    y[n, i]       = sum_a A[n, a, i] @ Wo[a] + bo         (N, Tq, output_dim)

Each projection is one :func:`~scratchnet.ops.dense` over the flattened
heads (Keras's ``EinsumDense`` with the same weights), so the backward is
the ops' own: dense's, then attention's (derived on its page), then dense's.
"""
from __future__ import annotations

import numpy

from .. import initializers, ops, regularizers
from ..backend import get_backend
from .._checks import check_fraction
from ..serialization import initializer_config, register
from ._args import positive_int
from .base import Layer


def _value(p):
    """A parameter's value; None for an absent bias."""
    return None if p is None else p.value


def _project(x, kernel, bias):
    """``x`` (N, T, D) through a (D, h, d) kernel and (h, d) bias: ``(y (N, h, T, d), backprop)``."""
    N, T, D = x.shape
    _, h, d = kernel.shape
    y, dense_backprop = ops.dense(x.reshape(N * T, D), kernel.reshape(D, h * d),
                                  None if bias is None else bias.reshape(h * d))
    heads = y.reshape(N, T, h, d).transpose(0, 2, 1, 3)

    def backprop(dheads):
        dy = dheads.transpose(0, 2, 1, 3).reshape(N * T, h * d)
        dx, dkernel, dbias = dense_backprop(dy)
        return dx.reshape(N, T, D), dkernel.reshape(D, h, d), None if dbias is None else dbias.reshape(h, d)

    return heads, backprop


def _empty_rows(A, backprop, V, empty, zero):
    """``(A, backprop)`` with the rows of the queries ``empty`` (N, 1, Tq, 1) that the mask leaves no key set as
    Keras 3 sets them: to 0 when the layer has dropout (its masked softmax zeroes masked weights), else to the
    mean of the values (its ``dot_product_attention`` gives such a row the same score for every key: weights
    1/Tk). Neither depends on the scores: such a row sends no gradient to Q and K."""
    xp = get_backend().xp
    if zero:
        return xp.where(empty, 0, A), (lambda dA: backprop(xp.where(empty, 0, dA)))
    Tk = V.shape[-2]
    A = xp.where(empty, V.mean(axis=-2, keepdims=True), A)

    def uniform_backprop(dA):
        dQ, dK, dV = backprop(xp.where(empty, 0, dA))
        return dQ, dK, dV + xp.where(empty, dA, 0).sum(axis=-2, keepdims=True) / Tk

    return A, uniform_backprop


@register
class MultiHeadAttention(Layer):
    """Multi-head attention with Keras's arguments, defaults and weight layout.

    Parameters
    ----------
    num_heads : int
    key_dim : int
        Depth of each head's queries and keys.
    value_dim : int, optional
        Depth of each head's values; default ``key_dim``.
    dropout : float in [0, 1)
        Dropout on the attention weights, in training.
    use_bias : bool
    output_shape : int, optional
        The output's last dimension; default the query's.
    kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer :
        As for :class:`~scratchnet.layers.Dense`, for all four projections.

    Call ``layer(query, value=None, key=None, attention_mask=None, use_causal_mask=False, training=False)``:
    ``value`` defaults to ``query`` (self-attention, the form a
    :class:`~scratchnet.Sequential` uses) and ``key`` to ``value``;
    ``attention_mask`` is boolean, broadcastable to (N, Tq, Tk), True where a
    query may attend. ``backprop(dy)`` returns ``dquery`` for self-attention,
    and ``[dquery, dvalue, dkey]`` (``dkey`` None when no key was given) otherwise.

    Masks (Keras 3's ``_compute_attention_mask``): with ``takes_mask`` the layer gets the masks of
    its inputs, ``mask=m`` (the query's; for self-attention the value's too) or ``mask=[query_mask,
    value_mask(, key_mask)]`` (the inputs of ``layer([query, value(, key)])``). Query ``i`` may
    attend to key ``j`` where ``query_mask[i] & value_mask[j] & key_mask[j]`` (and the
    ``attention_mask``, and the causal mask); a query left no key attends to every key equally (Keras's
    ``dot_product_attention``), or, with ``dropout``, to none (Keras's masked softmax then: weights 0).
    The output's mask is the query's.

    Weights, in Keras's order: ``query/kernel`` (Dq, h, key_dim), ``query/bias`` (h, key_dim),
    ``key/kernel`` (Dk, h, key_dim), ``key/bias``, ``value/kernel`` (Dv, h, value_dim),
    ``value/bias`` (h, value_dim), ``attention_output/kernel`` (h, value_dim, output_dim),
    ``attention_output/bias`` (output_dim,): ``get_weights()`` of a Keras layer loads unchanged.
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, name=None, dtype=None):
        super().__init__(name, dtype)
        self.num_heads = positive_int("MultiHeadAttention", "num_heads", num_heads)
        self.key_dim = positive_int("MultiHeadAttention", "key_dim", key_dim)
        self.value_dim = self.key_dim if value_dim is None else positive_int("MultiHeadAttention", "value_dim",
                                                                             value_dim)
        check_fraction("MultiHeadAttention", "dropout", dropout)
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.output_dim = None if output_shape is None else positive_int("MultiHeadAttention", "output_shape",
                                                                         output_shape)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self._other_shapes = None  # (value's, key's) last dimensions, set by the first forward

    takes_mask = True
    supports_masking = True

    def __call__(self, query, value=None, key=None, training=False, **kwargs):
        """Keras's call, ``layer(query, value=None, key=None, training=False, ...)``: the output.

        With a ``value`` (and ``key``) it is ``layer([query, value(, key)])``, so that a functional model
        passes each input's mask along (``layer(x, x)`` is self-attention with ``x``'s mask on both sides).
        """
        if isinstance(value, (bool, numpy.bool_)) or isinstance(key, (bool, numpy.bool_)):
            raise ValueError(f"MultiHeadAttention {self.name!r}: the second argument is value and the third key "
                             f"(Keras's call(query, value, key)); pass training= by keyword")
        if value is None:
            if key is not None:
                raise ValueError(f"MultiHeadAttention {self.name!r}: key is given without value; pass value= too")
            return super().__call__(query, training, **kwargs)
        return super().__call__([query, value] + ([] if key is None else [key]), training, **kwargs)

    def compute_mask(self, x, mask):
        """The query's mask (Keras's)."""
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def forward(self, x, training=False, need_dx=True, value=None, key=None, attention_mask=None,
                use_causal_mask=False, **kwargs):
        if isinstance(x, (list, tuple)):  # layer([query, value(, key)]): the functional API's call of two inputs
            if not 2 <= len(x) <= 3 or value is not None or key is not None:
                raise ValueError(f"MultiHeadAttention {self.name!r}: a list input is [query, value] or [query, value, "
                                 f"key], without value= or key=; got {len(x)} inputs")
            inputs = len(x)
            y, backprop = self.forward(x[0], training, need_dx, x[1], x[2] if inputs == 3 else None, attention_mask,
                                       use_causal_mask, **kwargs)
            return y, (lambda dy: backprop(dy)[:inputs])
        if value is None and key is not None:
            raise ValueError(f"MultiHeadAttention {self.name!r}: key is given without value; pass value= too")
        value = None if value is None else self._as_input(value)
        key = None if key is None else self._as_input(key)
        if not self.built:
            dq = numpy.shape(x)[-1]
            dv = dq if value is None else value.shape[-1]
            self._other_shapes = (dv, dv if key is None else key.shape[-1])
        return super().forward(x, training, need_dx, value=value, key=key, attention_mask=attention_mask,
                               use_causal_mask=use_causal_mask, **kwargs)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"MultiHeadAttention {self.name!r}: query must have rank 3 [N, T, D], got shape "
                             f"{input_shape}")
        dq = input_shape[-1]
        dv, dk = self._other_shapes or (dq, dq)
        h, out = self.num_heads, self.output_dim or dq
        for part, d_in, depth in (("query", dq, self.key_dim), ("key", dk, self.key_dim),
                                  ("value", dv, self.value_dim)):
            setattr(self, f"{part}_kernel", self.add_weight(f"{part}/kernel", (d_in, h, depth), self.kernel_initializer,
                                                            regularizer=self.kernel_regularizer))
            setattr(self, f"{part}_bias", self.add_weight(f"{part}/bias", (h, depth), self.bias_initializer,
                                                          regularizer=self.bias_regularizer) if self.use_bias else None)
        self.output_kernel = self.add_weight("attention_output/kernel", (h, self.value_dim, out),
                                             self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.output_bias = (self.add_weight("attention_output/bias", (out,), self.bias_initializer,
                                            regularizer=self.bias_regularizer) if self.use_bias else None)

    def _check(self, name, a, depth):
        if a.ndim != 3 or a.shape[-1] != depth:
            raise ValueError(f"MultiHeadAttention {self.name!r}: {name} must have shape [N, T, {depth}] (the depth it "
                             f"was built for), got {tuple(a.shape)}")

    def call(self, x, training=False, value=None, key=None, attention_mask=None, use_causal_mask=False, mask=None):
        self_attention = value is None
        v = x if self_attention else value
        k = v if key is None else key
        self._check("query", x, self.query_kernel.shape[0])
        self._check("value", v, self.value_kernel.shape[0])
        self._check("key", k, self.key_kernel.shape[0])
        if k.shape[:2] != v.shape[:2] or x.shape[0] != v.shape[0]:
            raise ValueError(f"MultiHeadAttention {self.name!r}: query {tuple(x.shape)}, value {tuple(v.shape)} and "
                             f"key {tuple(k.shape)} must share the batch, and key and value the length")
        Q, q_backprop = _project(x, self.query_kernel.value, _value(self.query_bias))
        K, k_backprop = _project(k, self.key_kernel.value, _value(self.key_bias))
        V, v_backprop = _project(v, self.value_kernel.value, _value(self.value_bias))
        causal = bool(use_causal_mask)
        allowed = attention_mask
        if allowed is not None:
            allowed = self._as_mask(allowed)
            if allowed.ndim == 3:
                allowed = allowed[:, None]  # (N, Tq, Tk) -> (N, 1, Tq, Tk): the same for every head, as in Keras
        empty = None
        if mask is not None:
            allowed, empty = self._input_masks(mask, allowed, x, k, self_attention, key is None, causal)
            causal = False  # in `allowed` now
        A, attention_backprop = ops.attention(Q, K, V, mask=allowed, causal=causal,
                                              scale=1.0 / numpy.sqrt(self.key_dim),
                                              dropout_rate=self.dropout if training else 0.0)
        if empty is not None:
            A, attention_backprop = _empty_rows(A, attention_backprop, V, empty, self.dropout > 0)
        N, h, Tq, dv = A.shape
        out = self.output_kernel.shape[-1]
        Y, o_backprop = ops.dense(A.transpose(0, 2, 1, 3).reshape(N * Tq, h * dv),
                                  self.output_kernel.value.reshape(h * dv, out), _value(self.output_bias))

        def backprop(dY):
            dA, dWo, dbo = o_backprop(dY.reshape(N * Tq, out))
            self.output_kernel.accumulate(dWo.reshape(h, dv, out), fresh=True)
            if self.output_bias is not None:
                self.output_bias.accumulate(dbo, fresh=True)
            dQ, dK, dV = attention_backprop(dA.reshape(N, Tq, h, dv).transpose(0, 2, 1, 3))
            grads = {}
            for part, projection_backprop, d in (("query", q_backprop, dQ), ("key", k_backprop, dK),
                                                 ("value", v_backprop, dV)):
                grads[part], dkernel, dbias = projection_backprop(d)
                getattr(self, f"{part}_kernel").accumulate(dkernel)
                if dbias is not None:
                    getattr(self, f"{part}_bias").accumulate(dbias)
            if self_attention:
                return grads["query"] + grads["key"] + grads["value"]
            if key is None:
                return [grads["query"], grads["value"] + grads["key"], None]
            return [grads["query"], grads["value"], grads["key"]]

        return Y.reshape(N, Tq, out), backprop

    def _input_masks(self, mask, allowed, q, k, self_attention, no_key, causal):
        """``(allowed, empty)``: the attention mask of Keras's ``_compute_attention_mask`` from the inputs' masks
        (query's over rows, value's and key's over columns; the key's only when a key was given), with the
        ``attention_mask`` and causal mask, as (N, 1, Tq, Tk); and ``empty`` (N, 1, Tq, 1), the queries it
        leaves no key, which are then given every key (the op needs one) and set after (:func:`_empty_rows`)."""
        be = get_backend()
        xp = be.xp
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask, mask if self_attention else None]
        masks += [None] * (3 - len(masks))
        if no_key:
            masks[2] = None
        N, Tq, Tk = q.shape[0], q.shape[1], k.shape[1]
        full = xp.ones((N, 1, Tq, Tk), dtype=bool)
        for m, length, index in zip(masks, (Tq, Tk, Tk), (numpy.s_[:, None, :, None], numpy.s_[:, None, None, :],
                                                          numpy.s_[:, None, None, :])):
            if m is None:
                continue
            m = be.native(f"MultiHeadAttention {self.name!r}", "mask", m)
            if m.dtype != numpy.bool_ or tuple(m.shape) != (N, length):
                raise ValueError(f"MultiHeadAttention {self.name!r}: an input's mask must be boolean (N, T) = "
                                 f"({N}, {length}), got {m.dtype} {tuple(m.shape)}")
            full = full & m[index]
        if allowed is not None:
            full = full & allowed
        if causal:
            full = full & xp.tril(xp.ones((Tq, Tk), dtype=bool))
        empty = ~full.any(axis=-1, keepdims=True)
        return full | empty, empty

    def _as_mask(self, mask):
        be = get_backend()
        mask = be.native(f"MultiHeadAttention {self.name!r}", "attention_mask", mask)
        if mask.dtype != numpy.bool_:
            raise ValueError(f"MultiHeadAttention {self.name!r}: attention_mask must be boolean (True: attend), got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        return mask

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias,
                "output_shape": self.output_dim,
                "kernel_initializer": initializer_config(self.kernel_initializer),
                "bias_initializer": initializer_config(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}
