"""Keras interop: the same model, with the same weights, on either side.

scratchnet's layers keep Keras's names, arguments and weight layouts
(``Dense`` kernel (C, K); ``Conv2D`` kernel HWIO; ``LSTM`` kernel (D, 4H),
recurrent kernel (H, 4H), bias (4H,) with gates i, f, c, o; ``Embedding``
(V, D)), so converting is a matter of copying configs and ``get_weights()``.
TensorFlow / Keras is imported inside these functions only.
"""
from __future__ import annotations

from . import layers as L
from .model import Sequential


def _keras():
    try:
        import keras
    except ImportError as e:
        raise ImportError(f"interop needs Keras (pip install tensorflow); {e}") from e
    return keras


def _from_keras_layer(kl):
    """The scratchnet layer equivalent to the Keras layer ``kl`` (unbuilt)."""
    kind = type(kl).__name__
    c = kl.get_config()
    name = c["name"]

    def activation():
        a = c.get("activation")
        a = a if isinstance(a, str) or a is None else getattr(a, "__name__", a)
        return None if a == "linear" else a

    if kind == "Dense":
        return L.Dense(c["units"], activation=activation(), use_bias=c["use_bias"], name=name)
    if kind == "Conv2D":
        if c.get("data_format", "channels_last") != "channels_last" or tuple(c.get("dilation_rate", (1, 1))) != (1, 1):
            raise ValueError(f"from_keras: Conv2D {name!r} must be channels_last without dilation")
        if c.get("groups", 1) != 1:
            raise ValueError(f"from_keras: Conv2D {name!r} has groups={c['groups']}; only 1 is supported")
        return L.Conv2D(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                        activation=activation(), use_bias=c["use_bias"], name=name)
    if kind in ("MaxPooling2D", "MaxPool2D"):
        return L.MaxPool2D(c["pool_size"], strides=c["strides"], padding=c["padding"], name=name)
    if kind == "LSTM":
        if c.get("activation") != "tanh" or c.get("recurrent_activation") != "sigmoid" or not c.get("use_bias", True):
            raise ValueError(f"from_keras: LSTM {name!r} must use tanh / sigmoid activations and a bias")
        if c.get("go_backwards") or c.get("dropout") or c.get("recurrent_dropout"):
            raise ValueError(f"from_keras: LSTM {name!r}: go_backwards and (recurrent) dropout are not supported")
        return L.LSTM(c["units"], return_sequences=c["return_sequences"], return_state=c["return_state"],
                      stateful=c["stateful"], name=name)
    if kind == "Embedding":
        if c.get("mask_zero"):
            raise ValueError(f"from_keras: Embedding {name!r}: mask_zero is not supported")
        return L.Embedding(c["input_dim"], c["output_dim"], name=name)
    if kind == "Dropout":
        return L.Dropout(c["rate"], seed=c.get("seed"), name=name)
    if kind == "Flatten":
        return L.Flatten(name=name)
    if kind == "Reshape":
        return L.Reshape(c["target_shape"], name=name)
    if kind == "Activation":
        return L.Activation(activation(), name=name)
    raise ValueError(
        f"from_keras: layer {name!r} is a {kind}; supported: Dense, Conv2D, MaxPooling2D, LSTM, Embedding, "
        f"Dropout, Flatten, Reshape, Activation"
    )


def from_keras(keras_model):
    """A :class:`scratchnet.Sequential` computing what the Keras ``Sequential`` computes, with its weights.

    The Keras model must be built (have an input shape). Layer names are kept,
    so parameters are named ``<keras layer name>/<weight>``.
    """
    keras = _keras()
    if not isinstance(keras_model, keras.Sequential):
        raise ValueError(f"from_keras: expected a keras.Sequential, got {type(keras_model).__name__}")
    if not keras_model.built:
        raise ValueError("from_keras: the Keras model is not built; give it an Input(shape) or call it once")
    model = Sequential([_from_keras_layer(kl) for kl in keras_model.layers], name=keras_model.name)
    input_shape = tuple(keras_model.inputs[0].shape)
    dtype = "int32" if "int" in str(keras_model.inputs[0].dtype) else None
    model.build(input_shape, dtype=dtype)
    model.set_weights(keras_model.get_weights())
    return model


def _to_keras_layer(keras, layer):
    kl = keras.layers
    c = layer.get_config()
    name = layer.name
    if isinstance(layer, L.Dense):
        return kl.Dense(c["units"], activation=c["activation"], use_bias=c["use_bias"], name=name)
    if isinstance(layer, L.Conv2D):
        return kl.Conv2D(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                         activation=c["activation"], use_bias=c["use_bias"], name=name)
    if isinstance(layer, L.MaxPool2D):
        return kl.MaxPooling2D(c["pool_size"], strides=c["strides"], padding=c["padding"], name=name)
    if isinstance(layer, L.LSTM):
        return kl.LSTM(c["units"], return_sequences=c["return_sequences"], return_state=c["return_state"],
                       stateful=c["stateful"], name=name)
    if isinstance(layer, L.Embedding):
        return kl.Embedding(c["input_dim"], c["output_dim"], name=name)
    if isinstance(layer, L.Dropout):
        return kl.Dropout(c["rate"], seed=c["seed"], name=name)
    if isinstance(layer, L.Flatten):
        return kl.Flatten(name=name)
    if isinstance(layer, L.Reshape):
        return kl.Reshape(c["target_shape"], name=name)
    if isinstance(layer, L.Activation):
        return kl.Activation(c["activation"] or "linear", name=name)
    raise ValueError(f"to_keras: layer {name!r} is a {type(layer).__name__}, which has no Keras counterpart here")


def to_keras(model):
    """A ``keras.Sequential`` equivalent to the built scratchnet ``Sequential`` ``model``, with its weights."""
    keras = _keras()
    if not isinstance(model, Sequential):
        raise ValueError(f"to_keras: expected a scratchnet Sequential, got {type(model).__name__}")
    if not model.built or model.input_shape is None:
        raise ValueError("to_keras: the model is not built; call it on a batch or use model.build(input_shape)")
    stack = model.layers
    if len({id(layer) for layer in stack}) != len(stack):
        raise ValueError("to_keras: a layer used twice in the stack has no Keras Sequential equivalent")
    dtype = "int32" if isinstance(stack[0], L.Embedding) else model.dtype.name
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), dtype=dtype)
    keras_model = keras.Sequential([inputs] + [_to_keras_layer(keras, layer) for layer in stack], name=model.name)
    keras_model.set_weights(model.get_weights())
    return keras_model
