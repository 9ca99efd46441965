"""Keras's functional API: ``sn.Input``, layers called on placeholders, ``sn.Model(inputs, outputs)``.

A model that is not a stack (a skip connection, two inputs, a tensor used
twice) is written as the calls that make it::

    x = sn.Input((28, 28, 1))
    h = sn.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    y = sn.layers.Add()([h, sn.layers.Conv2D(16, 3, padding="same")(h)])   # a residual connection
    model = sn.Model(x, sn.layers.Dense(10)(sn.layers.Flatten()(y)))

Calling a layer on a :class:`~scratchnet.layers.symbolic.SymbolicTensor`
records the call (a :class:`Node`) and returns the placeholder of its output;
nothing is computed but a batch of one zero example, to learn the output's
shape. ``Model(inputs, outputs)`` (a :class:`Functional`) walks back from the
outputs to the inputs, puts the calls in an order where each comes after
what it reads, and runs them in that order. Its ``backprop`` runs their
backprops in reverse: a tensor read by two calls receives the sum of the two
gradients, the multivariate chain rule (``dx = dy_1/dx + dy_2/dx``).

The layers are built (their weights created) when the model is, in the
order of the calls, and named as in any model: their weights are
``<layer>/<weight>``, the same names as a ``Sequential`` of the same layers.
"""
from __future__ import annotations

import numpy

from .. import random as _random
from ..backend import get_backend
from ..dtypes import float_dtype, floatx
from ..layers.base import as_backend_array
from ..layers.symbolic import Node, SymbolicTensor
from ..serialization import register
from . import functional_config
from .base import Model

_names = {}


def _unique_input_name(name):
    if name is not None:
        return name
    n = _names.get("input", 0)
    _names["input"] = n + 1
    return "input" if n == 0 else f"input_{n}"


def _resolve(value, lookup):
    """``value`` with each placeholder replaced by ``lookup(placeholder)`` (a dict's values, a list's items)."""
    if isinstance(value, SymbolicTensor):
        return lookup(value)
    if isinstance(value, dict):
        return {k: _resolve(v, lookup) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_resolve(v, lookup) for v in value]
    return value


def Input(shape, dtype=None, name=None, batch_size=None):
    """A model input of ``shape`` (without the batch axis), Keras's ``keras.Input``.

    Parameters
    ----------
    shape : tuple of int
    dtype : optional
        ``"int32"`` (or any integer dtype) for ids; a float dtype, which the
        model then takes (its layers' weights); default :func:`scratchnet.floatx`.
    name : str, optional
    batch_size : int, optional
        The batch the model is built with (default 1); any batch runs.
    """
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"Input: shape must be a tuple of positive sizes (without the batch axis), got {shape!r}") from None
    if any(s < 1 for s in shape):
        raise ValueError(f"Input: shape must hold positive sizes (without the batch axis), got {shape!r}")
    explicit = dtype is not None
    dtype = numpy.dtype(floatx() if dtype is None else dtype)
    if dtype.kind == "f":
        dtype = float_dtype("Input", dtype)
    elif dtype.kind not in "iu":
        raise ValueError(f"Input: dtype must be a float or an integer dtype, got {dtype}")
    batch = 1 if batch_size is None else int(batch_size)
    node = Node(None, None, {}, None, _unique_input_name(name))
    node.explicit_dtype = explicit
    example = get_backend().xp.zeros((batch,) + shape, dtype=dtype)
    tensor = SymbolicTensor((None,) + shape, dtype, node, 0, example)
    node.outputs.append(tensor)
    return tensor


def record_call(layer, x, training, kwargs):
    """``layer(x, **kwargs)`` on placeholders: the output's placeholder(s), and the call recorded in them.

    The layer runs once on the placeholders' examples (a batch of one zero
    example) to find its output's shape; a layer that was not built before
    is unbuilt again afterwards, and the random numbers it drew are given
    back: the model builds it, named as one of its layers.
    """
    for value in [x, *kwargs.values()]:
        if any(hasattr(v, "shape") and not isinstance(v, SymbolicTensor)
               for v in (value if isinstance(value, (list, tuple)) else [value])):
            raise ValueError(f"{type(layer).__name__} {layer.name!r}: called on placeholders (sn.Input) mixed with "
                             f"arrays; in a functional model every array comes from its inputs")
    node = Node(layer, x, kwargs, True if training is True else None, layer.name)
    was_built = layer.built
    state = _random.get_state()
    scope, layer._scope = layer._scope, None  # a trial build must not create weights in the caller's scope
    try:
        y, _ = layer.forward(_resolve(x, _example), False, **_resolve(kwargs, _example))
    finally:
        layer._scope = scope
        _random.set_state(state)
        if not was_built:
            _unbuild(layer)
        elif hasattr(layer, "reset_states"):
            layer.reset_states()
    for i, out in enumerate(y if isinstance(y, (list, tuple)) else [y]):
        node.outputs.append(SymbolicTensor((None,) + tuple(out.shape[1:]), out.dtype, node, i, out))
    return list(node.outputs) if isinstance(y, (list, tuple)) else node.outputs[0]


def _example(t):
    return t.example


def _unbuild(layer):
    for part in layer._tree():
        part._weights = []
        part._own_store = None
        part.built = False
        part.input_shape = part.output_shape = None


def _as_list(value, what):
    if isinstance(value, SymbolicTensor):
        return [value], False
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, SymbolicTensor) for v in value):
        return list(value), True
    raise ValueError(f"Model: {what} must be a placeholder (sn.Input, or a layer's output on one) or a list of them, "
                     f"got {value!r:.120}")


def _graph(inputs, outputs):
    """The calls between ``inputs`` and ``outputs``, each after the calls it reads (the order they were made)."""
    seen, stack = {}, [t.node for t in outputs]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(t.node for t in node.inputs)
    given = {id(t.node) for t in inputs}
    for node in seen.values():
        if node.layer is None and id(node) not in given:
            raise ValueError(f"Model: the outputs depend on the input {node.name!r}, which is not in inputs")
    nodes = sorted((n for n in seen.values() if n.layer is not None), key=lambda n: n.order)
    for t in inputs:
        if id(t.node) not in seen:
            raise ValueError(f"Model: the input {t.node.name!r} is not used by any output")
        if t.node.layer is not None:
            raise ValueError(f"Model: inputs must be sn.Input placeholders; {t.name!r} is the output of a layer")
    return nodes


@register
class Functional(Model):
    """A model from its inputs and outputs: ``sn.Model(inputs, outputs)`` (Keras's functional model).

    Parameters
    ----------
    inputs : SymbolicTensor or list of them
        Made by :func:`Input`.
    outputs : SymbolicTensor or list of them
        Made by calling layers on the inputs (and on those outputs).
    name : str, optional
    dtype : optional
        Default: the float dtype given to the inputs (``sn.Input(..., dtype="float64")``), else the usual rule.

    ``model(x)`` takes an array (a list of arrays for several inputs) and
    returns an array (a list for several outputs). ``backprop(dy)`` takes
    ``dy`` shaped likewise (``None`` for an output that has no gradient).
    """

    takes_need_dx = True
    takes_mask = True

    def __init__(self, inputs, outputs, name=None, dtype=None, _build=True):
        self._inputs, self._many_inputs = _as_list(inputs, "inputs")
        self._outputs, self._many_outputs = _as_list(outputs, "outputs")
        floats = {t.dtype for t in self._inputs if t.dtype.kind == "f" and t.node.explicit_dtype}
        if dtype is None and len(floats) == 1:
            dtype = floats.pop()
        super().__init__(name, dtype)
        self._nodes = _graph(self._inputs, self._outputs)
        self.output_mask = None
        for node in self._nodes:
            self._track(node.layer)
        if _build:
            self._build_from_inputs()

    # -- building ----------------------------------------------------------------------
    def _build_from_inputs(self):
        xp = get_backend().xp
        examples = [xp.zeros(t.example.shape, dtype=t.dtype if t.dtype.kind != "f" else self.dtype)
                    for t in self._inputs]
        self.built = True  # Model.forward would take the input's shape from a list of examples
        self.forward(examples if self._many_inputs else examples[0], training=False)
        self.reset_states()
        self.built = True
        shapes = [t.shape for t in self._inputs]
        self.input_shape = shapes if self._many_inputs else shapes[0]

    def build(self, input_shape=None, dtype=None):
        """Build every layer from the inputs' shapes (``input_shape``, if given, must be theirs)."""
        shapes = [t.shape for t in self._inputs]
        if input_shape is not None:
            given = [tuple(s) for s in input_shape] if self._many_inputs else [tuple(input_shape)]
            if [s[1:] for s in given] != [s[1:] for s in shapes]:
                raise ValueError(f"{self.name}: build(input_shape={input_shape!r}) does not match the model's inputs "
                                 f"{shapes if self._many_inputs else shapes[0]}")
        self._build_from_inputs()

    def compile(self, optimizer="sgd", loss=None, metrics=("accuracy",)):
        """Keras's ``compile``, for a model of one output (a loss per output is not supported)."""
        if self._many_outputs:
            raise ValueError(f"{self.name}: compile: the model has {len(self._outputs)} outputs; training takes one "
                             f"loss on one output here (Keras's loss per output is not supported): train "
                             f"sn.Model(inputs, one_output), which shares these layers and weights")
        super().compile(optimizer, loss, metrics)

    @property
    def inputs(self):
        return list(self._inputs)

    @property
    def outputs(self):
        return list(self._outputs)

    # -- running -----------------------------------------------------------------------
    def compute_mask(self, x, mask):
        """The mask its last forward's output had (a model inside a model passes it on)."""
        return self.output_mask

    def _arrays_of_inputs(self, x):
        if self._many_inputs:
            if not isinstance(x, (list, tuple)) or len(x) != len(self._inputs):
                raise ValueError(f"{self.name}: takes a list of {len(self._inputs)} arrays (its inputs "
                                 f"{[t.node.name for t in self._inputs]}), got {type(x).__name__}"
                                 f"{f' of {len(x)}' if isinstance(x, (list, tuple)) else ''}")
            xs = list(x)
        else:
            xs = [x]
        arrays = []
        for t, a in zip(self._inputs, xs):
            a = as_backend_array(a, self.dtype)
            if a.ndim != len(t.shape) or tuple(a.shape[1:]) != t.shape[1:]:
                raise ValueError(f"{self.name}: input {t.node.name!r} must have shape {t.shape}, got {tuple(a.shape)}")
            if (a.dtype.kind == "f") != (t.dtype.kind == "f"):
                raise ValueError(f"{self.name}: input {t.node.name!r} takes {t.dtype} values, got {a.dtype}")
            arrays.append(a)
        return arrays

    def call(self, x, training=False, need_dx=True, mask=None):
        """Run the calls in order; ``backprop`` runs theirs in reverse, summing the gradients of a tensor read twice."""
        values, masks, needs = {}, {}, {}
        input_masks = mask if self._many_inputs else [mask]
        if input_masks is None:
            input_masks = [None] * len(self._inputs)
        for t, a, m in zip(self._inputs, self._arrays_of_inputs(x), input_masks):
            values[id(t)], masks[id(t)], needs[id(t)] = a, m, bool(need_dx) and a.dtype.kind == "f"
        steps = []
        for node in self._nodes:
            layer = node.layer
            arguments = _resolve(node.x, lambda t: values[id(t)])
            kwargs = _resolve(node.kwargs, lambda t: values[id(t)])
            wants_dx = any(needs[id(t)] for t in node.inputs)
            in_mask = _resolve(node.x, lambda t: masks[id(t)])
            if layer.takes_mask and _any_mask(in_mask):
                kwargs["mask"] = in_mask
            y, backprop = layer.forward(arguments, node.training or training, need_dx=wants_dx, **kwargs)
            out_mask = layer.compute_mask(arguments, in_mask)
            trains = any(p.trainable for p in layer.parameters())
            ys = y if len(node.outputs) > 1 else [y]
            out_masks = out_mask if len(node.outputs) > 1 and isinstance(out_mask, (list, tuple)) else \
                [out_mask] * len(node.outputs)
            for t, a, m in zip(node.outputs, ys, out_masks):
                values[id(t)], masks[id(t)], needs[id(t)] = a, m, wants_dx or trains
            steps.append((node, backprop, wants_dx, trains))
        outs = [values[id(t)] for t in self._outputs]
        out_masks = [masks[id(t)] for t in self._outputs]
        self.output_mask = out_masks if self._many_outputs else out_masks[0]

        def backprop(dy):
            grads = {}
            for t, g in zip(self._outputs, dy if self._many_outputs else [dy]):
                if g is not None:
                    _add(grads, t, g)
            for node, node_backprop, wants_dx, trains in reversed(steps):
                if not (wants_dx or trains):
                    continue
                douts = [grads.pop(id(t), None) for t in node.outputs]
                if all(g is None for g in douts):
                    continue  # nothing downstream of this call reaches the loss
                dxs = node_backprop(douts if len(node.outputs) > 1 else douts[0])
                if not wants_dx:
                    continue
                dxs = list(dxs) if isinstance(dxs, (list, tuple)) else [dxs]
                if len(dxs) < len(node.inputs) or any(g is not None for g in dxs[len(node.inputs):]):
                    raise ValueError(f"{self.name}: layer {node.layer.name!r} returned {len(dxs)} gradients for its "
                                     f"{len(node.inputs)} inputs")
                for t, g in zip(node.inputs, dxs):
                    if g is not None and needs[id(t)]:
                        _add(grads, t, g)
            if not need_dx:
                return None
            dx = [grads.get(id(t)) for t in self._inputs]
            dx = [get_backend().xp.zeros_like(values[id(t)]) if g is None else g for t, g in zip(self._inputs, dx)]
            return dx if self._many_inputs else dx[0]

        return (outs if self._many_outputs else outs[0]), backprop

    # -- configuration (scratchnet/model/functional_config.py) -------------------------
    def get_config(self):
        """The layers, the inputs, and the calls (each argument naming the input or call output it reads)."""
        return functional_config.get_config(self)

    @classmethod
    def from_config(cls, config):
        """Rebuild the model from :meth:`get_config`, unbuilt (nothing is run: ``build`` creates the weights)."""
        return functional_config.from_config(cls, config)


def _any_mask(mask):
    if isinstance(mask, (list, tuple)):
        return any(m is not None for m in mask)
    return mask is not None


def _add(grads, t, g):
    grads[id(t)] = g if id(t) not in grads else grads[id(t)] + g
