"""Keras interop: the same model, with the same weights, on either side.

scratchnet's layers keep Keras's names, arguments and weight layouts
(``Dense`` kernel (C, K); ``Conv2D`` kernel HWIO; ``LSTM`` kernel (D, 4H),
recurrent kernel (H, 4H), bias (4H,) with gates i, f, c, o; ``Embedding``
(V, D)), so converting is a matter of copying configs and ``get_weights()``.
TensorFlow / Keras is imported inside these functions only.

Dtypes travel both ways. ``from_keras`` reads each Keras layer's dtype policy
(``layer.dtype_policy``: float32 or float64, from ``dtype=`` on the layer or
``keras.backend.set_floatx`` / ``keras.config.set_dtype_policy`` when it was
built) and builds the scratchnet layer, and the ``Sequential``, in that dtype;
``to_keras`` passes each layer's dtype to the Keras layer. scratchnet computes
in one dtype per model, float32 or float64, with the weights in that dtype, so
``from_keras`` refuses a model whose layers disagree and a policy it cannot
represent (mixed precision such as ``"mixed_float16"``, float16, bfloat16,
quantized). The Keras ``Sequential``'s own policy is not read: it computes
nothing itself, and a model built with ``dtype="float64"`` on every layer keeps
the float32 default there. Give the ``keras.Input`` the layers' dtype too:
Keras rounds the data to the Input's dtype before the first layer casts it
back up, while scratchnet casts it to the model's dtype once.

L1 / L2 / L1L2 weight regularizers are carried over (Keras's ``l2(s)`` is
``s * sum(w**2)``, the same as ``sn.regularizers.l2(s)``), with the factors
as the Keras config holds them (Keras's TensorFlow backend casts an L2 factor
to the weights' dtype through float32, so a float64 Keras model penalises with
``float32(s)``: 2.5e-8 relative off for ``5e-5``); activity regularizers,
weight constraints and other regularizers are refused, since the trained
weights would differ.

GRU and SimpleRNN (Keras's defaults: tanh, sigmoid, ``reset_after=True``),
``Bidirectional`` around a GRU, SimpleRNN or LSTM, ``LayerNormalization`` and
``BatchNormalization`` (last axis; the moving averages travel with the
weights) convert both ways.

Keras has no LogSoftmax layer: ``to_keras`` writes ``sn.layers.LogSoftmax()``
(``axis=-1``) as ``Activation("log_softmax")``, which ``from_keras`` reads
back as ``sn.layers.Activation("log_softmax")``; another axis is refused.
"""
from __future__ import annotations

from .. import layers as L
from ..model import Functional, Sequential
from . import graph
from .layers import (
    check_supported,
    dtype_name,
    from_keras_layer,
    import_keras,
    keras_layer_dtype,
    to_keras_layer,
)

__all__ = ["from_keras", "to_keras"]


def from_keras(keras_model):
    """A :class:`scratchnet.Sequential` computing what the Keras ``Sequential`` computes, with its weights;
    a functional ``keras.Model(inputs, outputs)`` gives a functional ``sn.Model`` with the same graph
    (:mod:`scratchnet.interop.graph`).

    The Keras model must be built (have an input shape). Layer names are kept,
    so parameters are named ``<keras layer name>/<weight>``. The model and its
    layers take the Keras layers' dtype (float32 or float64), which must be the
    same for every layer.
    """
    keras = import_keras()
    if not isinstance(keras_model, keras.Model):
        raise ValueError(f"from_keras: expected a keras.Sequential or a functional keras.Model, got "
                         f"{type(keras_model).__name__}")
    if not keras_model.built:
        raise ValueError("from_keras: the Keras model is not built; give it an Input(shape) or call it once")
    if not isinstance(keras_model, keras.Sequential):
        if not getattr(keras_model, "_inbound_nodes", None) and not hasattr(keras_model, "_operations") \
                or not getattr(keras_model, "inputs", None):
            raise ValueError(f"from_keras: {keras_model.name!r} is a subclassed keras.Model (its call is code); "
                             f"a Sequential or a functional model (keras.Model(inputs, outputs)) converts")
        return graph.from_keras_functional(keras, keras_model)
    klayers = list(keras_model.layers)
    for kl in klayers:  # a layer scratchnet lacks is refused whatever its dtype
        check_supported(kl)
    dtypes = [keras_layer_dtype(kl) for kl in klayers]
    if len(set(dtypes)) > 1:
        listing = ", ".join(f"{kl.name!r} {d}" for kl, d in zip(klayers, dtypes))
        raise ValueError(
            f"from_keras: the Keras model {keras_model.name!r} mixes dtypes ({listing}); a scratchnet Sequential "
            f"computes in one dtype, so build every Keras layer in the same one (dtype='float64' on each layer, "
            f"or keras.backend.set_floatx('float64') before building them)"
        )
    dtype = dtypes[0] if dtypes else "float32"
    model = Sequential([from_keras_layer(kl, dtype) for kl in klayers], name=keras_model.name, dtype=dtype)
    input_shape = tuple(keras_model.inputs[0].shape)
    input_dtype = "int32" if "int" in str(keras_model.inputs[0].dtype) else None
    model.build(input_shape, dtype=input_dtype)
    model.set_weights(keras_model.get_weights())
    return model



def to_keras(model):
    """A ``keras.Sequential`` equivalent to the built scratchnet ``Sequential`` ``model``, with its weights
    (a functional ``sn.Model`` gives a functional ``keras.Model``).

    Each Keras layer is built in its scratchnet layer's dtype (the model's), so
    a float64 model gives float64 Keras weights and outputs.
    """
    keras = import_keras()
    if isinstance(model, Functional):
        return graph.to_keras_functional(keras, model)
    if not isinstance(model, Sequential):
        raise ValueError(f"to_keras: expected a scratchnet Sequential or functional Model, got {type(model).__name__}")
    if not model.built or model.input_shape is None:
        raise ValueError("to_keras: the model is not built; call it on a batch or use model.build(input_shape)")
    stack = model.layers
    if len({id(layer) for layer in stack}) != len(stack):
        raise ValueError("to_keras: a layer used twice in the stack has no Keras Sequential equivalent")
    model_dtype = dtype_name(model.dtype)
    input_dtype = "int32" if isinstance(stack[0], L.Embedding) else model_dtype
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), dtype=input_dtype)
    klayers = [to_keras_layer(keras, layer, dtype_name(getattr(layer, "dtype", None) or model_dtype))
               for layer in stack]
    keras_model = keras.Sequential([inputs] + klayers, name=model.name)
    keras_model.set_weights(model.get_weights())
    return keras_model
