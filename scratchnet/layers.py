"""Keras's layers, thin: each holds its Parameters and calls ``sn.ops``.

Names, arguments, defaults and weight layouts are Keras's, so that
``get_weights()`` of a Keras layer loads into the scratchnet one unchanged:

=================  ==============================================================
layer              weights (Keras order and layout)
=================  ==============================================================
``Dense``          ``kernel`` (C, K), ``bias`` (K,)
``Conv2D``         ``kernel`` (kh, kw, C, O) (HWIO), ``bias`` (O,)
``LSTM``           ``kernel`` (D, 4H), ``recurrent_kernel`` (H, 4H), ``bias`` (4H,); gates i, f, c, o
``Embedding``      ``embeddings`` (V, D)
=================  ==============================================================

Every layer's ``forward(x, training) -> (y, backprop)``; ``backprop(dy)``
adds the weight gradients to ``p.grad`` and returns ``dx`` (``None`` for
Embedding, whose integer input has no gradient).
"""
from __future__ import annotations

import math
import numbers

import numpy

from . import initializers, ops, regularizers
from ._checks import check_fraction, pair
from .model import Layer, as_backend_array

# Activations by Keras name; None and "linear" are the identity.
_ACTIVATIONS = {"relu": ops.relu, "sigmoid": ops.sigmoid, "tanh": ops.tanh, "softmax": ops.softmax}


def _activation(layer, name):
    if name is None or name == "linear":
        return None
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(f"{layer}: unknown activation {name!r}; choose one of None, 'linear', {', '.join(map(repr, _ACTIVATIONS))}")
    return name


def _activate(name, Y):
    """``(Y, backprop)`` of the activation ``name`` (the identity for ``None``)."""
    if name is None:
        return Y, lambda dY: dY
    return _ACTIVATIONS[name](Y)


def _padding(layer, padding):
    if not isinstance(padding, str) or padding.lower() not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {padding!r}")
    return padding.lower()


def _positive_int(layer, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {v!r}")
    return int(v)


class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` on the last axis of ``x``.

    Parameters
    ----------
    units : int
        K, the output size.
    activation : {None, "linear", "relu", "sigmoid", "tanh", "softmax"}
    use_bias : bool
    kernel_initializer, bias_initializer : name or callable
    kernel_regularizer, bias_regularizer : Regularizer, optional

    Input ``(N, ..., C)``, output ``(N, ..., K)``: leading axes are flattened
    for the GEMM, as Keras does for a sequence fed to a Dense.
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.units = _positive_int("Dense", "units", units)
        self.activation = _activation("Dense", activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"Dense {self.name!r}: input must have rank >= 2 [N, ..., C], got shape {input_shape}")
        C = input_shape[-1]
        self.kernel = self.add_weight("kernel", (C, self.units), self.kernel_initializer, regularizer=self.kernel_regularizer)
        self.bias = (
            self.add_weight("bias", (self.units,), self.bias_initializer, regularizer=self.bias_regularizer)
            if self.use_bias
            else None
        )

    def call(self, x, training=False):
        lead = tuple(x.shape[:-1])
        X = x.reshape(-1, x.shape[-1])
        Z, dense_backprop = ops.dense(X, self.kernel.value, None if self.bias is None else self.bias.value)
        Y, act_backprop = _activate(self.activation, Z)

        def backprop(dY):
            dZ = act_backprop(dY.reshape(Y.shape))
            dX, dW, db = dense_backprop(dZ)
            self.kernel.accumulate(dW)
            if self.bias is not None:
                self.bias.accumulate(db)
            return dX.reshape(x.shape)

        return Y.reshape(lead + (self.units,)), backprop

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": _init_config(self.kernel_initializer),
                "bias_initializer": _init_config(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


class Conv2D(Layer):
    """2-D convolution over NHWC inputs with an HWIO kernel (``tf.nn.conv2d``).

    Parameters
    ----------
    filters : int
        O, the number of output channels.
    kernel_size : int or (kh, kw)
    strides : int or (sh, sw)
    padding : {"valid", "same"}
    activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer : as :class:`Dense`

    Input ``(N, H, W, C)``, output ``(N, OH, OW, O)``.
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.filters = _positive_int("Conv2D", "filters", filters)
        self.kernel_size = pair("Conv2D", "kernel_size", kernel_size)
        self.strides = pair("Conv2D", "strides", strides)
        self.padding = _padding("Conv2D", padding)
        self.activation = _activation("Conv2D", activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"Conv2D {self.name!r}: input must have rank 4 [N, H, W, C], got shape {input_shape}")
        kh, kw = self.kernel_size
        self.kernel = self.add_weight(
            "kernel", (kh, kw, input_shape[-1], self.filters), self.kernel_initializer, regularizer=self.kernel_regularizer
        )
        self.bias = (
            self.add_weight("bias", (self.filters,), self.bias_initializer, regularizer=self.bias_regularizer)
            if self.use_bias
            else None
        )

    def call(self, x, training=False):
        Z, conv_backprop = ops.conv2d(
            x, self.kernel.value, None if self.bias is None else self.bias.value, self.strides, self.padding.upper()
        )
        Y, act_backprop = _activate(self.activation, Z)

        def backprop(dY):
            dX, dW, db = conv_backprop(act_backprop(dY))
            self.kernel.accumulate(dW)
            if self.bias is not None:
                self.bias.accumulate(db)
            return dX

        return Y, backprop

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": _init_config(self.kernel_initializer),
                "bias_initializer": _init_config(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


class MaxPool2D(Layer):
    """Max pooling over NHWC inputs (``tf.nn.max_pool2d``); ``strides`` defaults to ``pool_size``."""

    def __init__(self, pool_size=2, strides=None, padding="valid", name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.pool_size = pair("MaxPool2D", "pool_size", pool_size)
        self.strides = self.pool_size if strides is None else pair("MaxPool2D", "strides", strides)
        self.padding = _padding("MaxPool2D", padding)

    def call(self, x, training=False):
        return ops.max_pool2d(x, self.pool_size, self.strides, self.padding.upper())

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides, "padding": self.padding}


MaxPooling2D = MaxPool2D


class LSTM(Layer):
    """Long short-term memory over ``(N, T, D)`` sequences, Keras's ``LSTM`` (tanh, sigmoid gates).

    Parameters
    ----------
    units : int
        H, the state size.
    return_sequences : bool
        Output every step ``(N, T, H)`` instead of the last ``(N, H)``.
    return_state : bool
        Output ``[output, h, c]``; ``backprop`` then takes ``[doutput, dh, dc]``
        (``None`` entries are zeros).
    stateful : bool
        Start each batch from the final state of the previous one (batches
        must keep their size); :meth:`reset_states` starts again from zeros.
        Gradients stop at the batch boundary (truncated BPTT).
    unit_forget_bias : bool
        Initialise the forget gate's bias to 1 (Keras's default).

    ``forward(x, training, initial_state=[h0, c0])`` starts from a given state;
    ``backprop`` then returns ``[dx, dh0, dc0]``.
    """

    def __init__(self, units, return_sequences=False, return_state=False, stateful=False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.units = _positive_int("LSTM", "units", units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.stateful = bool(stateful)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.states = None

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"LSTM {self.name!r}: input must have rank 3 [N, T, D], got shape {input_shape}")
        H = self.units
        self.kernel = self.add_weight("kernel", (input_shape[-1], 4 * H), self.kernel_initializer,
                                      regularizer=self.kernel_regularizer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (H, 4 * H), self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer)
        self.bias = self.add_weight("bias", (4 * H,), self._bias_init, regularizer=self.bias_regularizer)

    def _bias_init(self, shape, dtype):
        b = numpy.asarray(self.bias_initializer(shape, dtype))
        if self.unit_forget_bias:
            b = b.copy()
            b[self.units : 2 * self.units] = 1  # gates are i, f, c, o
        return b

    def reset_states(self):
        self.states = None

    def call(self, x, training=False, initial_state=None):
        N = x.shape[0]
        h0 = c0 = None
        if initial_state is not None:
            h0, c0 = (as_backend_array(s, self.dtype) for s in initial_state)
        elif self.stateful and self.states is not None:
            h0, c0 = self.states
            if h0.shape[0] != N:
                raise ValueError(
                    f"LSTM {self.name!r}: a stateful layer needs a fixed batch size; the state has {h0.shape[0]} "
                    f"rows but x has {N} (x: {tuple(x.shape)}); call reset_states() to start over"
                )
        (ys, h, c), lstm_backprop = ops.lstm(x, self.kernel.value, self.recurrent_kernel.value, self.bias.value, h0, c0)
        if self.stateful:
            self.states = (h, c)
        out = ys if self.return_sequences else h

        def backprop(dY):
            if self.return_state:
                dout, dh, dc = dY
            else:
                dout, dh, dc = dY, None, None
            if self.return_sequences:
                dys = dout
            else:
                # The last output is h itself: its gradient joins dh.
                dys = None
                if dout is not None:
                    dh = dout if dh is None else dh + dout
            dX, dK, dR, db, dh0, dc0 = lstm_backprop(dys, dh, dc)
            self.kernel.accumulate(dK)
            self.recurrent_kernel.accumulate(dR)
            self.bias.accumulate(db)
            return [dX, dh0, dc0] if initial_state is not None else dX

        return ([out, h, c] if self.return_state else out), backprop

    def get_config(self):
        return {**super().get_config(), "units": self.units, "return_sequences": self.return_sequences,
                "return_state": self.return_state, "stateful": self.stateful,
                "kernel_initializer": _init_config(self.kernel_initializer),
                "recurrent_initializer": _init_config(self.recurrent_initializer),
                "bias_initializer": _init_config(self.bias_initializer), "unit_forget_bias": self.unit_forget_bias,
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}


class Embedding(Layer):
    """Row lookup: integer ids of any shape ``S`` -> ``S + (output_dim,)``.

    Keras's default initializer is ``uniform`` (U(-0.05, 0.05)). ``backprop``
    adds the (scatter-summed) table gradient and returns ``None``.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.input_dim = _positive_int("Embedding", "input_dim", input_dim)
        self.output_dim = _positive_int("Embedding", "output_dim", output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim), self.embeddings_initializer,
                                          regularizer=self.embeddings_regularizer)

    def call(self, x, training=False):
        if x.dtype.kind == "f":
            # Keras accepts float ids (a float dataset) and casts them.
            x = x.astype(numpy.int64)
        Y, embedding_backprop = ops.embedding(x, self.embeddings.value)

        def backprop(dY):
            self.embeddings.accumulate(embedding_backprop(dY))
            return None

        return Y, backprop

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": _init_config(self.embeddings_initializer),
                "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer)}


class Dropout(Layer):
    """Inverted dropout in training mode; the identity in inference mode.

    ``seed`` seeds a layer-private generator (each call draws a new mask from
    it); without one, masks come from ``scratchnet.random``.
    """

    def __init__(self, rate, seed=None, name=None, dtype="float32"):
        super().__init__(name, dtype)
        check_fraction("Dropout", "rate", rate)
        self.rate = float(rate)
        self.seed = seed
        self._rng = None if seed is None else numpy.random.default_rng(seed)

    def call(self, x, training=False):
        if not training or self.rate == 0:
            return x, lambda dY: dY
        seed = None if self._rng is None else int(self._rng.integers(2**31))
        return ops.dropout(x, self.rate, seed)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class Flatten(Layer):
    """``(N, ...)`` -> ``(N, prod(...))`` in row-major (NHWC) order, as Keras."""

    def call(self, x, training=False):
        shape = x.shape
        return x.reshape(shape[0], -1), lambda dY: dY.reshape(shape)


class Reshape(Layer):
    """``(N, ...)`` -> ``(N,) + target_shape``; one entry of ``target_shape`` may be -1."""

    def __init__(self, target_shape, name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.target_shape = tuple(int(s) for s in target_shape)
        if sum(s == -1 for s in self.target_shape) > 1 or any(s < -1 or s == 0 for s in self.target_shape):
            raise ValueError(f"Reshape: target_shape must hold positive sizes and at most one -1, got {target_shape!r}")

    def call(self, x, training=False):
        shape = x.shape
        size = math.prod(shape[1:])
        known = math.prod(s for s in self.target_shape if s != -1)
        if (-1 in self.target_shape and size % known) or (-1 not in self.target_shape and known != size):
            raise ValueError(
                f"Reshape {self.name!r}: cannot reshape input {tuple(shape)} ({size} values per example) "
                f"to {self.target_shape}"
            )
        return x.reshape((shape[0],) + self.target_shape), lambda dY: dY.reshape(shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}


class Activation(Layer):
    """An activation as a layer: ``Activation("relu")``."""

    def __init__(self, activation, name=None, dtype="float32"):
        super().__init__(name, dtype)
        self.activation = _activation("Activation", activation)

    def call(self, x, training=False):
        return _activate(self.activation, x)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


def _init_config(init):
    # Custom callables cannot be serialized; they are recorded by name only.
    if isinstance(init, initializers.Initializer):
        return initializers.serialize(init)
    return getattr(init, "__name__", repr(init))


_LAYERS = {cls.__name__: cls for cls in (Dense, Conv2D, MaxPool2D, LSTM, Embedding, Dropout, Flatten, Reshape, Activation)}


def serialize(layer):
    """``{"class_name", "config"}``; a config rebuilds the layer (without its weights) via :func:`deserialize`."""
    from .model import Sequential

    if isinstance(layer, Sequential):
        return {"class_name": "Sequential", "config": layer.get_config()}
    if type(layer).__name__ not in _LAYERS:
        raise ValueError(f"layers.serialize: {type(layer).__name__} is not a built-in layer")
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def deserialize(config):
    """The layer (or Sequential) a :func:`serialize` dict describes, unbuilt."""
    from .model import Sequential

    name = config.get("class_name")
    if name == "Sequential":
        return Sequential.from_config(config["config"])
    cls = _LAYERS.get(name)
    if cls is None:
        raise ValueError(f"layers.deserialize: unknown layer class {name!r}; known: {sorted(_LAYERS)}")
    kwargs = dict(config["config"])
    for key in list(kwargs):
        if key.endswith("_initializer") and isinstance(kwargs[key], dict):
            kwargs[key] = initializers.get(kwargs[key])
        elif key.endswith("_regularizer"):
            kwargs[key] = regularizers.get(kwargs[key])
    return cls(**kwargs)
