"""Export a trained model to one file, and load it back without the code that built it.

The file holds the architecture (the layers' configs as JSON, from
``scratchnet.layers.serialize``), the input shape, and the weights in Keras
order. :func:`load_model` rebuilds the :class:`scratchnet.Sequential` from the
registry of layers (the built-in ones and those decorated with
``@sn.layers.register``) and loads the weights: the counterpart of TF 1's
frozen ``combined_model.pb`` (lesson 1's original, post 002, section 4.6), in the same checksummed,
pickle-free format as the checkpoints (:func:`scratchnet.checkpoint.write_archive`).

A subclassed :class:`scratchnet.Model` is code, not configuration: save its
weights with a :class:`scratchnet.Checkpoint` instead.
"""
from __future__ import annotations

import math

from . import layers
from . import random as _random
from .backend import to_numpy
from .checkpoint import CheckpointError, read_archive, write_archive
from .model import Functional, Sequential
from .layers._args import op_padding
from .ops.conv_transpose import conv2d_transpose_output_shape
from .ops.shapes import padding_2d
from .parameters import ParameterStore
from .serialization import deserialize, serialize

FORMAT = "scratchnet.model"
VERSION = 1
#: The most numbers one example of a loaded model's input may hold (2**20: a
#: 1024 x 1024 grey image; the lessons' models take 784 or 50). Loading builds the
#: model by running one zero example through it, so a crafted ``input_shape``
#: must not make that example, and the activations it flows into, huge.
MAX_INPUT_ELEMENTS = 2**20
#: The most axes an input may have, the batch axis included (images have 4).
MAX_INPUT_RANK = 8
#: The most numbers one activation of the build pass may hold (2**22: 16 MB
#: in float32). The pass runs one example; the lessons' models' largest is
#: LeNet's second convolution, 14 x 14 patches of 5 x 5 x 32 (156,800
#: numbers). A crafted config (a Dense of 200,000 units on 1,000 steps of one
#: number, its kernel 800 KB) could otherwise make 800 MB from a 1 MB file.
MAX_BUILD_NUMBERS = 2**22


def save_model(model, path):
    """Write ``model``'s architecture and weights to ``path`` (atomically).

    Parameters
    ----------
    model : scratchnet.Sequential
        Built (called once, or ``model.build(input_shape)``), made of
        built-in layers.
    path : str
    """
    if not isinstance(model, (Sequential, Functional)):
        raise ValueError(
            f"save_model: only a Sequential or a functional Model of registered layers can be exported, got "
            f"{type(model).__name__}; "
            f"save a subclassed model's weights with sn.Checkpoint"
        )
    params = list(model.parameters())
    if not model.built or model.input_shape is None:
        raise ValueError(f"save_model: model {model.name!r} is not built; call it on a batch or model.build(input_shape) first")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": serialize(model),
        # a functional model's inputs are in its config; its first one here too
        "input_shape": list(model.input_shape[0] if isinstance(model.input_shape, list) else model.input_shape),
        "weights": [p.name for p in params],
    }
    write_archive(path, meta, {f"weight_{i}": to_numpy(p.value) for i, p in enumerate(params)})


def load_model(path):
    """The model saved by :func:`save_model`, built and with its weights; ready to ``predict``.

    Nothing the file declares is trusted before it is checked: the header's
    fields first (:data:`MAX_INPUT_ELEMENTS`), then the activations the
    config implies for one example (:data:`MAX_BUILD_NUMBERS`), then each
    weight the rebuilt layers ask for against the array the file stores
    under that name, *before* it is allocated (see :class:`_FileWeights`).
    An 872-byte file whose config says ``units=12000`` is refused at once
    instead of drawing 144 million random weights and only then finding that
    the file holds 12.

    Raises
    ------
    scratchnet.checkpoint.CheckpointError
        The file is corrupt or truncated, is not an exported model, or its
        header does not describe the weights it holds; the message names the
        file, the field and, for a weight, the layer.
    """
    meta, arrays = read_archive(path)
    config, input_shape, weights = _parse_header(path, meta, arrays)
    try:
        model = deserialize(config)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"load_model: {path!r}: header field 'model' does not describe a model "
                              f"({type(e).__name__}: {e})") from None
    if not isinstance(model, (Sequential, Functional)):
        raise CheckpointError(f"load_model: {path!r}: header field 'model' describes a {type(model).__name__}, "
                              f"not a Sequential or a functional Model")
    if isinstance(model, Functional):
        input_shape = _functional_input_shape(path, model, input_shape)
    # The model takes its weights from the file, whatever parameter scope the
    # caller is in: each one is checked as a layer asks for it.
    model._scope = None
    model._own_store = _FileWeights(path, weights, _layers_by_path(model))
    _check_build_size(path, model, input_shape)
    # Building runs one zero example through the model; a custom layer may
    # still draw random numbers, which must not change what the caller draws next.
    rng_state = _random.get_state()
    try:
        model.build(None if isinstance(model, Functional) else input_shape)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"load_model: {path!r}: the model of header field 'model' does not build for "
                              f"header field 'input_shape' {list(input_shape)} ({type(e).__name__}: {e})") from None
    finally:
        _random.set_state(rng_state)
    names = [p.name for p in model.parameters()]
    if names != list(weights):
        raise CheckpointError(f"load_model: {path!r}: header field 'weights': the model rebuilds weights {names} "
                              f"but the file holds {list(weights)}")
    return model


def _parse_header(path, meta, arrays):
    """``(model config, input shape, {weight name: array})`` of an exported model's header, each field checked."""
    def bad(field, problem):
        return CheckpointError(f"load_model: {path!r}: header field {field!r} {problem}")

    if meta.get("format") != FORMAT:
        raise CheckpointError(f"load_model: {path!r} is a {meta.get('format')!r} file, not an exported model")
    if meta.get("version") != VERSION:
        raise bad("version", f"is {meta.get('version')!r}; this scratchnet reads exported models of version {VERSION}")
    config = meta.get("model")
    if not isinstance(config, dict):
        raise bad("model", f"must be a layer config {{'class_name', 'config'}}, got {type(config).__name__}")
    input_shape = _input_shape(meta.get("input_shape"), bad)
    names = meta.get("weights")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise bad("weights", f"must be a list of weight names, got {names!r:.80}")
    if len(set(names)) != len(names):
        raise bad("weights", "names a weight twice")
    weights = {}
    for i, name in enumerate(names):
        array = arrays.get(f"weight_{i}")
        if array is None:
            raise bad("weights", f"lists {len(names)} weights, but the file holds no array 'weight_{i}' for {name!r}")
        if array.dtype.kind != "f":
            raise bad("weights", f"names {name!r}, whose array 'weight_{i}' holds {array.dtype}, not floats")
        weights[name] = array
    return config, input_shape, weights


def _input_shape(shape, bad):
    """The ``input_shape`` field as a tuple ``(None, d1, ...)``, its example at most :data:`MAX_INPUT_ELEMENTS` numbers."""
    if not isinstance(shape, list) or not 2 <= len(shape) <= MAX_INPUT_RANK \
            or not (shape[0] is None or _positive(shape[0])) or not all(_positive(d) for d in shape[1:]):
        raise bad("input_shape", f"must be [batch or null, then 1 to {MAX_INPUT_RANK - 1} positive sizes], "
                                 f"got {shape!r:.80}")
    if math.prod(shape[1:]) > MAX_INPUT_ELEMENTS:
        raise bad("input_shape", f"is {shape}: one example of {math.prod(shape[1:]):,} numbers, more than the "
                                 f"{MAX_INPUT_ELEMENTS:,} a model loaded from a file may take")
    return (None,) + tuple(shape[1:])


def _positive(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _layers_by_path(model, prefix=""):
    """``{"name" or "outer/inner": layer}`` of every layer in ``model``'s tree, as weight names spell their paths."""
    found = {}
    for layer in getattr(model, "layers", ()):
        found[prefix + layer.name] = layer
        found.update(_layers_by_path(layer, prefix + layer.name + "/"))
    return found


class _FileWeights(ParameterStore):
    """A model's parameter store that hands each layer the weight stored in the file, checked first.

    When a layer asks for a weight (:meth:`scratchnet.Layer.add_weight`), the
    shape it asks for (what its config implies) is compared with the shape
    of the array the file stores under that name. A different shape or a
    missing name is refused before anything is allocated; a match becomes
    the parameter as it is, so no initial weights are drawn at all.
    """

    def __init__(self, path, weights, layers):
        super().__init__()
        self._path, self._weights, self._layers = path, weights, layers

    def get(self, name, shape, dtype, initializer, reuse=False, trainable=True, regularizer=None):
        shape = tuple(int(s) for s in shape)
        stored = self._weights.get(name)
        if stored is None or tuple(stored.shape) != shape:
            raise self._refusal(name, shape, stored)
        return super().get(name, shape, dtype, lambda _shape, dtype: stored.astype(dtype, copy=False),
                           reuse=reuse, trainable=trainable, regularizer=regularizer)

    def _refusal(self, name, shape, stored):
        where, _, _ = name.rpartition("/")
        layer = self._layers.get(where)
        fields = _fields_behind(layer, shape, () if stored is None else stored.shape)
        asks = (f"layer {where!r}{f' ({fields})' if fields else ''} asks for weight {name!r} of shape {shape} "
                f"({math.prod(shape):,} numbers)")
        holds = ("but the file stores no weight of that name" if stored is None
                 else f"but the file stores it with shape {tuple(stored.shape)} ({stored.size:,} numbers)")
        return CheckpointError(f"load_model: {self._path!r}: header field 'model': {asks}, {holds}; "
                               f"nothing was allocated for it")


def _fields_behind(layer, shape, stored_shape):
    """``"units=12000"``: the integer config fields of ``layer`` that put a size into ``shape`` that the file lacks."""
    if layer is None:
        return ""
    try:
        config = layer.get_config()
    except Exception:  # a custom layer's get_config: the message does without the fields
        return ""
    odd = set(shape) - set(stored_shape)
    return ", ".join(f"{key}={value}" for key, value in config.items()
                     if _positive(value) and value in odd)


def _check_build_size(path, model, input_shape):
    """Refuse a model whose one-example build pass would make an activation above :data:`MAX_BUILD_NUMBERS`.

    The weights are checked against the file as they are created; the
    activations between them are not stored anywhere, so their sizes are
    worked out here from the layers' configs, before anything runs. A layer
    this does not know (a custom one) ends the estimate: its output shape
    cannot be told without running it.
    """
    if isinstance(model, Functional):
        return _check_graph_build_size(path, model)
    shape = tuple(input_shape[1:])
    for where, layer in _flat_layers(model):
        step = _output_shape(layer, shape)
        if step is None:
            return
        shape, numbers = step
        if numbers > MAX_BUILD_NUMBERS:
            fields = _fields_behind(layer, shape, ())
            raise CheckpointError(
                f"load_model: {path!r}: header field 'model': layer {where!r}{f' ({fields})' if fields else ''} "
                f"would make {numbers:,} numbers for one example of header field 'input_shape' "
                f"{[None, *input_shape[1:]]}, more than the {MAX_BUILD_NUMBERS:,} a model loaded from a file may "
                f"(MAX_BUILD_NUMBERS); nothing was allocated")


def _functional_input_shape(path, model, input_shape):
    """A functional model's inputs are in its config: the header's ``input_shape`` must be its first, and each
    input is held to :data:`MAX_INPUT_ELEMENTS`."""
    shapes = [t.shape for t in model.inputs]
    if tuple(input_shape[1:]) != tuple(shapes[0][1:]):
        raise CheckpointError(f"load_model: {path!r}: header field 'input_shape' {list(input_shape)} is not the "
                              f"model's first input {list(shapes[0])}")
    for t in model.inputs:
        if len(t.shape) > MAX_INPUT_RANK or math.prod(t.shape[1:]) > MAX_INPUT_ELEMENTS:
            raise CheckpointError(f"load_model: {path!r}: header field 'model': input {t.node.name!r} of shape "
                                  f"{list(t.shape)} is larger than a model loaded from a file may take "
                                  f"({MAX_INPUT_ELEMENTS:,} numbers, rank {MAX_INPUT_RANK})")
    return input_shape


def _check_graph_build_size(path, model):
    """:func:`_check_build_size` for a functional model: the shapes followed call by call through its graph."""
    shapes = {id(t): tuple(t.shape[1:]) for t in model.inputs}
    for node in model._nodes:
        layer = node.layer
        ins = [shapes.get(id(t)) for t in node.inputs]
        if any(s is None for s in ins):
            continue  # after a layer this cannot follow: its build reports
        if isinstance(layer, layers.Concatenate) and isinstance(node.x, list):
            axis = layer.axis if layer.axis < 0 else layer.axis - 1
            try:
                out = list(ins[0])
                out[axis] = sum(s[axis] for s in ins)
            except IndexError:
                continue
            step = tuple(out), math.prod(out)
        elif isinstance(layer, (layers.Add, layers.Subtract, layers.Multiply, layers.Average)):
            step = ins[0], math.prod(ins[0])
        else:
            step = _output_shape(layer, ins[0])
        if step is None:
            continue
        out, numbers = step
        if numbers > MAX_BUILD_NUMBERS:
            raise CheckpointError(
                f"load_model: {path!r}: header field 'model': layer {layer.name!r} would make {numbers:,} numbers "
                f"for one example, more than the {MAX_BUILD_NUMBERS:,} a model loaded from a file may "
                f"(MAX_BUILD_NUMBERS); nothing was allocated")
        if len(node.outputs) == 1:
            shapes[id(node.outputs[0])] = out


def _flat_layers(model, prefix=""):
    """``(path, layer)`` of the layers a Sequential runs, nested Sequentials opened, in order."""
    for layer in model.layers:
        if isinstance(layer, Sequential):
            yield from _flat_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


def _output_shape(layer, shape):
    """``(output shape, most numbers made)`` of a built-in layer for one example of ``shape``; None if unknown.

    "Numbers made" counts the output and, for a convolution, its patches
    (kh x kw x C numbers for each output position) and, for an LSTM, its
    four gates at every step. A shape the layer cannot take is left to the
    build to report (None).
    """
    L = layers
    if isinstance(layer, (L.Activation, L.Dropout, L.LogSoftmax, L.LayerNormalization, L.BatchNormalization)):
        out = shape
    elif isinstance(layer, L.TokenAndPositionEmbedding) and len(shape) == 1 and shape[0] <= layer.sequence_length:
        out = shape + (layer.embedding_dim,)
    elif isinstance(layer, L.MultiHeadAttention) and len(shape) == 2:
        steps = shape[0]
        out = (steps, layer.output_dim or shape[1])
        return out, max(math.prod(out), layer.num_heads * steps * steps)  # the attention weights
    elif isinstance(layer, L.ResidualBlock) and len(shape) == 3:
        (h, w, _), s = shape, layer.strides
        out = (-(-h // s), -(-w // s), layer.filters)
        return out, max(math.prod(out), math.prod(out) * 9 * max(shape[2], layer.filters))  # its im2col patches
    elif isinstance(layer, L.TransformerBlock) and len(shape) == 2:
        steps = shape[0]
        return shape, max(math.prod(shape), steps * layer.intermediate_dim, layer.num_heads * steps * steps)
    elif isinstance(layer, L.Flatten):
        out = (math.prod(shape),)
    elif isinstance(layer, L.Reshape):
        known = math.prod(s for s in layer.target_shape if s != -1)
        out = tuple(math.prod(shape) // known if s == -1 else s for s in layer.target_shape)
    elif isinstance(layer, L.Dense) and shape:
        out = shape[:-1] + (layer.units,)
    elif isinstance(layer, L.Embedding):
        out = shape + (layer.output_dim,)
    elif isinstance(layer, L.LSTM) and len(shape) == 2:
        steps, units = shape[0], layer.units
        out = (steps, units) if layer.return_sequences else (units,)
        return out, max(math.prod(out), 4 * steps * units)
    elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)) and len(shape) == 3:
        out = (1, 1, shape[2]) if layer.keepdims else (shape[2],)
    elif isinstance(layer, L.Conv2DTranspose) and len(shape) == 3:  # a Conv2D subclass: asked before Conv2D
        (h, w, c), (kh, kw) = shape, layer.kernel_size
        try:
            (_, oh, ow, _), _ = conv2d_transpose_output_shape("Conv2DTranspose", (1, h, w, c), layer.kernel_size,
                                                              layer.strides, op_padding(layer.padding),
                                                              layer.output_padding, layer.filters)
        except ValueError:
            return None  # the build reports it
        out = (oh, ow, layer.filters)
        return out, max(math.prod(out), h * w * kh * kw * layer.filters)  # its columns before col2im
    elif isinstance(layer, (L.Conv2D, L.MaxPool2D, L.AveragePooling2D, L.DepthwiseConv2D)) and len(shape) == 3:
        (h, w, c) = shape
        (kh, kw) = layer.pool_size if isinstance(layer, (L.MaxPool2D, L.AveragePooling2D)) else layer.kernel_size
        if not isinstance(layer, (L.MaxPool2D, L.AveragePooling2D)):  # a dilated kernel spans (k - 1) * d + 1 cells
            kh, kw = ((k - 1) * d + 1 for k, d in zip((kh, kw), layer.dilation_rate))
        try:
            oh, ow, _ = padding_2d(type(layer).__name__, (1, h, w, c), (kh, kw), layer.strides, layer.padding)
        except ValueError:
            return None  # the build reports it
        if oh < 1 or ow < 1:
            return None
        out = (oh, ow, layer.filters if isinstance(layer, L.Conv2D) else
               c * layer.depth_multiplier if isinstance(layer, L.DepthwiseConv2D) else c)
        return out, max(math.prod(out), oh * ow * kh * kw * c)
    else:
        return None
    return out, math.prod(out)
