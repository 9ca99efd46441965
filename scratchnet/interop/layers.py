"""One layer at a time, both ways: ``from_keras_layer`` and ``to_keras_layer`` (see :mod:`scratchnet.interop`)."""
from __future__ import annotations

import numpy

from .. import layers as L
from .. import regularizers as R

# The float dtypes scratchnet computes in (weights and compute alike).
_FLOAT_DTYPES = ("float32", "float64")
# Weight regularizers (scratchnet argument / Keras attribute) by layer kind.
_REGULARIZERS = {
    "Dense": ("kernel_regularizer", "bias_regularizer"),
    "Conv2D": ("kernel_regularizer", "bias_regularizer"),
    "Conv2DTranspose": ("kernel_regularizer", "bias_regularizer"),
    "DepthwiseConv2D": ("depthwise_regularizer", "bias_regularizer"),
    "LSTM": ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer"),
    "Embedding": ("embeddings_regularizer",),
    "GRU": ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer"),
    "SimpleRNN": ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer"),
    "LayerNormalization": ("beta_regularizer", "gamma_regularizer"),
    "BatchNormalization": ("beta_regularizer", "gamma_regularizer"),
    "MultiHeadAttention": ("kernel_regularizer", "bias_regularizer"),
}
_SUPPORTED = ("Dense", "Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D",
              "GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D", "LSTM",
              "Embedding", "Dropout", "Flatten", "Reshape", "Activation", "GRU", "SimpleRNN", "Bidirectional",
              "LayerNormalization", "BatchNormalization", "MultiHeadAttention", "Add", "Subtract", "Multiply",
              "Average", "Concatenate", "Masking")
_CONSTRAINTS = ("kernel_constraint", "bias_constraint", "recurrent_constraint", "embeddings_constraint",
                "beta_constraint", "gamma_constraint")


def import_keras():
    try:
        import keras
    except ImportError as e:
        raise ImportError(f"interop needs Keras (pip install tensorflow); {e}") from e
    return keras


def dtype_name(dtype):
    """A Keras / TensorFlow / NumPy dtype (or its name) as a name: ``"float64"``."""
    name = getattr(dtype, "name", dtype)
    try:
        return numpy.dtype(name).name
    except TypeError:
        return str(name)  # bfloat16 and the like, which NumPy does not know


def keras_layer_dtype(kl):
    """The dtype (``"float32"`` / ``"float64"``) the Keras layer ``kl`` keeps its weights and computes in.

    A policy scratchnet cannot represent (variables and compute in different
    dtypes, a dtype other than float32 / float64, a quantized layer) is a
    ValueError naming the layer and the policy.
    """
    policy = getattr(kl, "dtype_policy", None)
    if policy is not None:
        policy_name = str(getattr(policy, "name", policy))
        variable = dtype_name(getattr(policy, "variable_dtype", None) or kl.dtype)
        compute = dtype_name(getattr(policy, "compute_dtype", None) or getattr(kl, "compute_dtype", kl.dtype))
        quantized = getattr(policy, "quantization_mode", None)
    else:  # an old tf.keras layer without a policy object
        variable = dtype_name(kl.dtype)
        compute = dtype_name(getattr(kl, "compute_dtype", kl.dtype))
        policy_name, quantized = variable, None
    if quantized or variable != compute or variable not in _FLOAT_DTYPES:
        why = (f"quantized ({quantized})" if quantized
               else f"variables in {variable}, compute in {compute}" if variable != compute
               else f"{variable} is not float32 or float64")
        raise ValueError(
            f"from_keras: layer {kl.name!r} has dtype policy {policy_name!r} ({why}); scratchnet keeps the weights "
            f"and computes in one dtype, float32 or float64, so mixed precision ('mixed_float16', "
            f"'mixed_bfloat16'), float16, bfloat16 and quantized layers have no equivalent"
        )
    return variable


def _from_keras_regularizer(kl, attr):
    r = getattr(kl, attr, None)
    if r is None:
        return None
    kind = type(r).__name__
    if kind not in ("L1", "L2", "L1L2"):
        raise ValueError(f"from_keras: layer {kl.name!r} has {attr}={kind}; only L1, L2 and L1L2 are supported")
    c = r.get_config()
    return R.L1L2(l1=float(c.get("l1") or 0.0), l2=float(c.get("l2") or 0.0))


def check_supported(kl):
    kind = type(kl).__name__
    if kind not in _SUPPORTED:
        raise ValueError(
            f"from_keras: layer {kl.name!r} is a {kind}; supported: Dense, Conv2D, Conv2DTranspose, DepthwiseConv2D, "
            f"MaxPooling2D, "
            f"AveragePooling2D, "
            f"GlobalAveragePooling2D, GlobalMaxPooling2D, LSTM, GRU, SimpleRNN, Bidirectional, LayerNormalization, "
            f"BatchNormalization, Embedding, Dropout, Flatten, Reshape, Activation, MultiHeadAttention, Add, "
            f"Subtract, Multiply, Average, Concatenate, Masking"
        )


def _check_unsupported_extras(kl):
    if getattr(kl, "activity_regularizer", None) is not None:
        raise ValueError(f"from_keras: layer {kl.name!r} has an activity_regularizer, which is not supported")
    for attr in _CONSTRAINTS:
        if getattr(kl, attr, None) is not None:
            raise ValueError(f"from_keras: layer {kl.name!r} has a {attr}, which is not supported")


def from_keras_layer(kl, dtype):
    """The scratchnet layer equivalent to the Keras layer ``kl`` (unbuilt), in ``dtype``."""
    kind = type(kl).__name__
    c = kl.get_config()
    name = c["name"]
    common = {"name": name, "dtype": dtype}
    check_supported(kl)
    _check_unsupported_extras(kl)
    regs = {attr: _from_keras_regularizer(kl, attr) for attr in _REGULARIZERS.get(kind, ())}

    def activation():
        a = c.get("activation")
        a = a if isinstance(a, str) or a is None else getattr(a, "__name__", a)
        return None if a == "linear" else a

    if kind == "Dense":
        return L.Dense(c["units"], activation=activation(), use_bias=c["use_bias"], **regs, **common)
    if kind == "Conv2D":
        if c.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"from_keras: Conv2D {name!r} must be channels_last")
        return L.Conv2D(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                        dilation_rate=tuple(c.get("dilation_rate", (1, 1))), groups=c.get("groups", 1),
                        activation=activation(),
                        use_bias=c["use_bias"], **regs, **common)
    if kind == "DepthwiseConv2D":
        if c.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"from_keras: DepthwiseConv2D {name!r} must be channels_last")
        return L.DepthwiseConv2D(c["kernel_size"], strides=c["strides"], padding=c["padding"],
                                 depth_multiplier=c["depth_multiplier"],
                                 dilation_rate=tuple(c.get("dilation_rate", (1, 1))), activation=activation(),
                                 use_bias=c["use_bias"], **regs, **common)
    if kind == "Conv2DTranspose":
        if c.get("data_format", "channels_last") != "channels_last" or tuple(c.get("dilation_rate", (1, 1))) != (1, 1):
            raise ValueError(f"from_keras: Conv2DTranspose {name!r} must be channels_last, without dilation")
        return L.Conv2DTranspose(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                                 output_padding=c.get("output_padding"), activation=activation(),
                                 use_bias=c["use_bias"], **regs, **common)
    if kind in ("MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D",
                "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D"):
        if c.get("data_format") not in (None, "channels_last"):
            raise ValueError(f"from_keras: {kind} {name!r} has data_format={c['data_format']!r}; "
                             f"only channels_last (NHWC) is supported")
    if kind in ("MaxPooling2D", "MaxPool2D"):
        return L.MaxPool2D(c["pool_size"], strides=c["strides"], padding=c["padding"], **common)
    if kind in ("AveragePooling2D", "AvgPool2D"):
        return L.AveragePooling2D(c["pool_size"], strides=c["strides"], padding=c["padding"], **common)
    if kind in ("GlobalAveragePooling2D", "GlobalAvgPool2D"):
        return L.GlobalAveragePooling2D(keepdims=bool(c.get("keepdims", False)), **common)
    if kind in ("GlobalMaxPooling2D", "GlobalMaxPool2D"):
        return L.GlobalMaxPooling2D(keepdims=bool(c.get("keepdims", False)), **common)
    if kind == "LSTM":
        if c.get("activation") != "tanh" or c.get("recurrent_activation") != "sigmoid" or not c.get("use_bias", True):
            raise ValueError(f"from_keras: LSTM {name!r} must use tanh / sigmoid activations and a bias")
        if c.get("dropout") or c.get("recurrent_dropout"):
            raise ValueError(f"from_keras: LSTM {name!r}: (recurrent) dropout is not supported")
        return L.LSTM(c["units"], return_sequences=c["return_sequences"], return_state=c["return_state"],
                      stateful=c["stateful"], zero_output_for_mask=bool(c.get("zero_output_for_mask")),
                      go_backwards=bool(c.get("go_backwards")), **regs, **common)
    if kind in ("GRU", "SimpleRNN"):
        if c.get("activation") != "tanh" or c.get("recurrent_activation", "sigmoid") != "sigmoid" \
                or not c.get("use_bias", True) or not c.get("reset_after", True):
            raise ValueError(f"from_keras: {kind} {name!r} must use tanh / sigmoid activations, a bias and "
                             f"reset_after=True (Keras's defaults)")
        if c.get("stateful") or c.get("dropout") or c.get("recurrent_dropout"):
            raise ValueError(f"from_keras: {kind} {name!r}: stateful and (recurrent) dropout are not supported")
        return getattr(L, kind)(c["units"], return_sequences=c["return_sequences"], return_state=c["return_state"],
                                go_backwards=c["go_backwards"],
                                zero_output_for_mask=bool(c.get("zero_output_for_mask")), **regs, **common)
    if kind == "Bidirectional":
        inner = kl.forward_layer
        back = kl.backward_layer
        if type(back) is not type(inner) or back.get_config()["units"] != inner.get_config()["units"] \
                or back.get_config().get("go_backwards") == inner.get_config().get("go_backwards"):
            raise ValueError(f"from_keras: Bidirectional {name!r} has a backward_layer that is not the forward "
                             f"layer's mirror; only Keras's own mirror (no backward_layer=) is supported")
        inner_kind = type(inner).__name__
        if inner_kind not in ("GRU", "SimpleRNN", "LSTM"):
            raise ValueError(f"from_keras: Bidirectional {name!r} wraps a {inner_kind}; GRU, SimpleRNN and LSTM are "
                             f"supported")
        layer = from_keras_layer(inner, dtype)
        if layer.name.startswith("forward_"):  # Keras named it forward_<name>; Bidirectional adds the prefix again
            layer.name = layer.name[len("forward_"):]
        if c.get("merge_mode") not in ("concat", "sum", "ave", "mul"):
            raise ValueError(f"from_keras: Bidirectional {name!r} has merge_mode={c.get('merge_mode')!r}; concat, "
                             f"sum, ave and mul are supported")
        return L.Bidirectional(layer, merge_mode=c["merge_mode"], **common)
    if kind in ("LayerNormalization", "BatchNormalization"):
        axis = c.get("axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        rank = len(kl.input.shape) if getattr(kl, "_inbound_nodes", None) else None
        if axis != -1 and (rank is None or axis != rank - 1):
            raise ValueError(f"from_keras: {kind} {name!r} normalizes axis {c.get('axis')!r}; only the last axis "
                             f"(channels last) is supported")
        if c.get("rms_scaling") or c.get("synchronized") or c.get("renorm"):
            raise ValueError(f"from_keras: {kind} {name!r}: rms_scaling, synchronized and renorm are not supported")
        extra = {"momentum": c["momentum"]} if kind == "BatchNormalization" else {}
        return getattr(L, kind)(epsilon=c["epsilon"], center=c["center"], scale=c["scale"], **extra, **regs,
                                **common)
    if kind == "Embedding":
        return L.Embedding(c["input_dim"], c["output_dim"], mask_zero=bool(c.get("mask_zero")), **regs, **common)
    if kind == "Masking":
        return L.Masking(mask_value=c["mask_value"], **common)
    if kind == "Dropout":
        return L.Dropout(c["rate"], seed=c.get("seed"), **common)
    if kind == "Flatten":
        return L.Flatten(**common)
    if kind == "Reshape":
        return L.Reshape(c["target_shape"], **common)
    if kind == "Activation":
        return L.Activation(activation(), **common)
    if kind in ("Add", "Subtract", "Multiply", "Average"):
        return getattr(L, kind)(**common)
    if kind == "Concatenate":
        return L.Concatenate(axis=c["axis"], **common)
    if kind == "MultiHeadAttention":
        axes = c.get("attention_axes")
        axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
        if axes not in (None, (1,), (-2,)) or c.get("use_gate") or c.get("sliding_window") is not None:
            raise ValueError(f"from_keras: MultiHeadAttention {name!r}: attention_axes, use_gate and sliding_window "
                             f"are not supported (attention runs over the sequence axis)")
        output = c.get("output_shape")
        if isinstance(output, (list, tuple)):
            if len(output) != 1:
                raise ValueError(f"from_keras: MultiHeadAttention {name!r} has output_shape={output!r}; one size is "
                                 f"supported")
            output = output[0]
        return L.MultiHeadAttention(c["num_heads"], c["key_dim"], value_dim=c.get("value_dim"), dropout=c["dropout"],
                                    use_bias=c["use_bias"], output_shape=output, **regs, **common)
    raise AssertionError(f"from_keras: {kind} is in _SUPPORTED but not converted")


def _to_keras_regularizer(keras, layer, config):
    if config is None:
        return None
    if config.get("class_name") != "L1L2":
        raise ValueError(f"to_keras: layer {layer.name!r} has a {config.get('class_name')} regularizer; "
                         f"only L1L2 (l1, l2) has a Keras counterpart here")
    c = config.get("config", {})
    return keras.regularizers.L1L2(l1=c.get("l1", 0.0), l2=c.get("l2", 0.0))


def to_keras_layer(keras, layer, dtype):
    kl = keras.layers
    c = layer.get_config()
    name = layer.name
    common = {"name": name, "dtype": dtype}
    kind = type(layer).__name__
    regs = {attr: _to_keras_regularizer(keras, layer, c.get(attr)) for attr in _REGULARIZERS.get(kind, ())}
    if isinstance(layer, (L.Add, L.Subtract, L.Multiply, L.Average)):
        return getattr(kl, kind)(**common)
    if isinstance(layer, L.Concatenate):
        return kl.Concatenate(axis=c["axis"], **common)
    if isinstance(layer, L.MultiHeadAttention):
        return kl.MultiHeadAttention(c["num_heads"], c["key_dim"], value_dim=c["value_dim"], dropout=c["dropout"],
                                     use_bias=c["use_bias"], output_shape=c["output_shape"], **regs, **common)
    if isinstance(layer, L.Dense):
        return kl.Dense(c["units"], activation=c["activation"], use_bias=c["use_bias"], **regs, **common)
    if not isinstance(c.get("padding", "valid"), str):
        raise ValueError(f"to_keras: layer {name!r} has the explicit padding {c['padding']}; Keras's {kind} takes "
                         "'valid' or 'same' (put a keras.layers.ZeroPadding2D before a 'valid' one)")
    # a Conv2DTranspose is a Conv2D (its subclass, as in Keras): asked first
    if isinstance(layer, L.Conv2DTranspose):
        return kl.Conv2DTranspose(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                                  output_padding=c["output_padding"], activation=c["activation"],
                                  use_bias=c["use_bias"], **regs, **common)
    if isinstance(layer, L.Conv2D):
        return kl.Conv2D(c["filters"], c["kernel_size"], strides=c["strides"], padding=c["padding"],
                         dilation_rate=c["dilation_rate"], groups=c["groups"], activation=c["activation"],
                         use_bias=c["use_bias"], **regs, **common)
    if isinstance(layer, L.DepthwiseConv2D):
        return kl.DepthwiseConv2D(c["kernel_size"], strides=c["strides"], padding=c["padding"],
                                  depth_multiplier=c["depth_multiplier"], dilation_rate=c["dilation_rate"],
                                  activation=c["activation"], use_bias=c["use_bias"], **regs, **common)
    if isinstance(layer, L.MaxPool2D):
        return kl.MaxPooling2D(c["pool_size"], strides=c["strides"], padding=c["padding"], **common)
    if isinstance(layer, L.AveragePooling2D):
        return kl.AveragePooling2D(c["pool_size"], strides=c["strides"], padding=c["padding"], **common)
    if isinstance(layer, L.GlobalAveragePooling2D):
        return kl.GlobalAveragePooling2D(keepdims=c["keepdims"], **common)
    if isinstance(layer, L.GlobalMaxPooling2D):
        return kl.GlobalMaxPooling2D(keepdims=c["keepdims"], **common)
    if isinstance(layer, L.LSTM):
        return kl.LSTM(c["units"], return_sequences=c["return_sequences"], return_state=c["return_state"],
                       stateful=c["stateful"], zero_output_for_mask=c["zero_output_for_mask"],
                       go_backwards=c["go_backwards"], **regs, **common)
    if isinstance(layer, (L.GRU, L.SimpleRNN)):
        return getattr(kl, kind)(c["units"], return_sequences=c["return_sequences"], return_state=c["return_state"],
                                 go_backwards=c["go_backwards"], zero_output_for_mask=c["zero_output_for_mask"],
                                 **regs, **common)
    if isinstance(layer, L.Bidirectional):
        inner = to_keras_layer(keras, layer.forward_layer, dtype)
        inner.name = layer.forward_layer.name[len("forward_"):] if layer.forward_layer.name.startswith("forward_") \
            else layer.forward_layer.name
        return kl.Bidirectional(inner, merge_mode=c["merge_mode"], **common)
    if isinstance(layer, (L.LayerNormalization, L.BatchNormalization)):
        extra = {"momentum": c["momentum"]} if kind == "BatchNormalization" else {}
        return getattr(kl, kind)(epsilon=c["epsilon"], center=c["center"], scale=c["scale"], **extra, **regs,
                                 **common)
    if isinstance(layer, L.Embedding):
        return kl.Embedding(c["input_dim"], c["output_dim"], mask_zero=c["mask_zero"], **regs, **common)
    if isinstance(layer, L.Masking):
        return kl.Masking(mask_value=c["mask_value"], **common)
    if isinstance(layer, L.Dropout):
        return kl.Dropout(c["rate"], seed=c["seed"], **common)
    if isinstance(layer, L.Flatten):
        return kl.Flatten(**common)
    if isinstance(layer, L.Reshape):
        return kl.Reshape(c["target_shape"], **common)
    if isinstance(layer, L.Activation):
        return kl.Activation(c["activation"] or "linear", **common)
    if isinstance(layer, L.LogSoftmax):
        # Keras has no LogSoftmax layer; its Activation("log_softmax") is one along the last axis.
        if c["axis"] != -1:
            raise ValueError(f"to_keras: LogSoftmax {name!r} has axis={c['axis']}; Keras's Activation('log_softmax') "
                             f"works along the last axis only (axis=-1)")
        return kl.Activation("log_softmax", **common)
    raise ValueError(f"to_keras: layer {name!r} is a {type(layer).__name__}, which has no Keras counterpart here")
