"""Functional models both ways: Keras's graph of layer calls rebuilt call by call on the other side.

``from_keras`` walks back from a Keras functional model's outputs through
each tensor's ``_keras_history`` (the layer call that made it) to its
inputs, converts each layer once (:func:`.layers.from_keras_layer`) and calls
it on the converted arguments, building a :class:`scratchnet.model.Functional`
with the same graph; ``to_keras`` does the reverse with ``keras.Input`` and
``keras.Model``. A layer called twice (shared weights) is converted once. The
weights are copied layer by layer.
"""
from __future__ import annotations

from ..model import Functional, Input
from .layers import check_supported, dtype_name, from_keras_layer, keras_layer_dtype, to_keras_layer

#: The keyword arguments of a Keras layer call that carry over (others are refused).
_CALL_KWARGS = {
    "MultiHeadAttention": ("attention_mask", "use_causal_mask"),
    "GRU": ("initial_state",), "SimpleRNN": ("initial_state",), "LSTM": ("initial_state",),
}
#: Keyword arguments a Keras call records that change nothing here (Keras fills them in itself).
_IGNORED_KWARGS = ("training", "mask", "return_attention_scores")


def from_keras_functional(keras, keras_model):
    """The :class:`~scratchnet.model.Functional` computing what the Keras functional ``keras_model`` computes."""
    operations = _operations(keras, keras_model)
    for op in operations:
        if not isinstance(op, keras.Model):
            check_supported(op)
    kinds = {keras_layer_dtype(op) for op in operations if not isinstance(op, keras.Model)}
    if len(kinds) > 1:
        raise ValueError(f"from_keras: the Keras model {keras_model.name!r} mixes dtypes ({sorted(kinds)}); a scratchnet "
                         f"model computes in one dtype, so build every Keras layer in the same one")
    dtype = kinds.pop() if kinds else "float32"
    tensors, converted = {}, {}
    inputs = []
    for kt in keras_model.inputs:
        integer = "int" in dtype_name(kt.dtype)
        t = Input(tuple(kt.shape[1:]), dtype="int32" if integer else dtype, name=_name(kt))
        tensors[id(kt)] = t
        inputs.append(t)

    def convert(kt):
        if id(kt) in tensors:
            return tensors[id(kt)]
        op, node_index, _ = kt._keras_history
        node = op._inbound_nodes[node_index]
        if id(op) not in converted:
            converted[id(op)] = _convert_operation(keras, op, dtype)
        layer = converted[id(op)]
        args, kwargs = list(node.arguments.args), dict(node.arguments.kwargs)
        kind = type(op).__name__
        allowed = _CALL_KWARGS.get(kind, ())
        if kind == "MultiHeadAttention":  # mha(query, value, key=None) is layer([query, value(, key)]) here
            inputs = list(args[:3]) + [kwargs.pop(k) for k in ("value", "key") if kwargs.get(k) is not None]
            args = [inputs]
        if len(args) != 1:
            raise ValueError(f"from_keras: layer {op.name!r} is called with {len(args)} positional arguments; one "
                             f"(a tensor or a list of tensors) is supported")
        call_kwargs = {}
        for key, value in kwargs.items():
            if key in _IGNORED_KWARGS:
                continue
            if key not in allowed:
                raise ValueError(f"from_keras: layer {op.name!r} is called with {key}=; supported here: "
                                 f"{list(allowed) or 'none'}")
            if value is not None:
                call_kwargs[key] = _map(value, convert)
        outs = layer(_map(args[0], convert), **call_kwargs)
        for ko, so in zip(node.outputs, outs if isinstance(outs, list) else [outs]):
            tensors[id(ko)] = so
        if id(kt) not in tensors:
            raise ValueError(f"from_keras: could not follow the output of layer {op.name!r}")
        return tensors[id(kt)]

    outputs = [convert(kt) for kt in keras_model.outputs]
    model = Functional(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                       name=keras_model.name, dtype=dtype)
    for op in operations:
        if not isinstance(op, keras.Model):
            converted[id(op)].set_weights(op.get_weights())
    return model


def _operations(keras, keras_model):
    """The Keras layers (not the InputLayers) the model calls, each once, in the model's order."""
    ops = []
    for op in keras_model.layers:
        if isinstance(op, keras.layers.InputLayer):
            continue
        ops.append(op)
    return ops


def _convert_operation(keras, op, dtype):
    if isinstance(op, keras.Model):
        from . import from_keras  # a nested model: converted whole, with its weights

        return from_keras(op)
    return from_keras_layer(op, dtype)


def _map(value, convert):
    if isinstance(value, (list, tuple)):
        return [_map(v, convert) for v in value]
    if hasattr(value, "_keras_history"):
        return convert(value)
    return value


def _name(kt):
    name = getattr(kt, "name", None)
    return name if isinstance(name, str) and name and "/" not in name else None


def to_keras_functional(keras, model):
    """A ``keras.Model`` with ``model``'s graph (a :class:`~scratchnet.model.Functional`) and its weights."""
    model_dtype = dtype_name(model.dtype)
    tensors, converted = {}, {}
    inputs = []
    for t in model.inputs:
        kt = keras.Input(shape=t.shape[1:], dtype="int32" if t.dtype.kind in "iu" else model_dtype, name=t.node.name)
        tensors[id(t)] = kt
        inputs.append(kt)
    for node in model._nodes:
        layer = node.layer
        if id(layer) not in converted:
            converted[id(layer)] = to_keras_layer(keras, layer, model_dtype)
        kl = converted[id(layer)]

        def lookup(v):
            return tensors[id(v)] if hasattr(v, "node") else v

        x = [lookup(v) for v in node.x] if isinstance(node.x, list) else lookup(node.x)
        kwargs = {k: ([lookup(v) for v in value] if isinstance(value, list) else lookup(value))
                  for k, value in node.kwargs.items()}
        if type(layer).__name__ == "MultiHeadAttention":  # layer([query, value(, key)]) or layer(q, value=...)
            parts = x if isinstance(x, list) else [x] + [kwargs.pop(k) for k in ("value", "key") if k in kwargs]
            if len(parts) == 1:
                parts.append(parts[0])
            outs = kl(*parts[:2], **({"key": parts[2]} if len(parts) > 2 else {}), **kwargs)
        else:
            outs = kl(x, **kwargs)
        for t, kt in zip(node.outputs, outs if isinstance(outs, (list, tuple)) else [outs]):
            tensors[id(t)] = kt
    outputs = [tensors[id(t)] for t in model.outputs]
    keras_model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                              name=model.name)
    for node in model._nodes:
        converted[id(node.layer)].set_weights(node.layer.get_weights())
    return keras_model
