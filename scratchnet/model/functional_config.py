"""A functional model's configuration: its layers, inputs and calls as JSON, and back.

:func:`get_config` writes each call as the index of its layer and its arguments, each naming a model
input (``{"input": i}``), an output of an earlier call (``{"node": j, "index": k}``) or a plain value
(``{"value": v}``). :func:`from_config` replays the calls without running anything, so a config read
from a file (an exported model, :mod:`scratchnet.export`) builds nothing before its weights are checked;
every index must name something defined before it.
"""
from __future__ import annotations

import numpy

from ..layers.symbolic import Node, SymbolicTensor
from ..serialization import deserialize, serialize


def get_config(model):
    """The layers, the inputs, and the calls (each argument naming the input or call output it reads)."""
    layers = list(model._layers)
    where = {}
    for i, t in enumerate(model._inputs):
        where[id(t)] = {"input": i}
    nodes = []
    for j, node in enumerate(model._nodes):
        kwargs = {}
        for key, value in node.kwargs.items():
            kwargs[key] = _spec(value, where, f"layer {node.layer.name!r}'s argument {key!r}")
        nodes.append({"layer": layers.index(node.layer), "x": _spec(node.x, where, node.layer.name),
                      "kwargs": kwargs, "training": node.training, "outputs": len(node.outputs)})
        for k, t in enumerate(node.outputs):
            where[id(t)] = {"node": j, "index": k}
    return {
        "name": model.name, "dtype": model.dtype.name,
        "layers": [serialize(layer) for layer in layers],
        "inputs": [{"name": t.node.name, "shape": list(t.shape[1:]), "dtype": t.dtype.name} for t in model._inputs],
        "many_inputs": model._many_inputs, "many_outputs": model._many_outputs,
        "nodes": nodes,
        "outputs": [_spec(t, where, "output") for t in model._outputs],
    }

def from_config(cls, config):
    """A ``cls`` (:class:`~scratchnet.model.functional.Functional`) from :func:`get_config`, unbuilt: nothing is
    run (``build`` creates the weights); every index the config holds is checked first."""
    layers = [deserialize(c) for c in _field(config, "layers", list)]
    inputs = []
    for spec in _field(config, "inputs", list):
        if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list):
            raise ValueError(f"Functional.from_config: an input must be {{'name', 'shape', 'dtype'}}, got {spec!r:.100}")
        inputs.append(_placeholder(spec))
    produced = []

    def tensor(spec):
        if isinstance(spec, list):
            return [tensor(s) for s in spec]
        if isinstance(spec, dict) and set(spec) == {"input"}:
            return inputs[_index(spec["input"], len(inputs), "input")]
        if isinstance(spec, dict) and set(spec) == {"node", "index"}:
            outs = produced[_index(spec["node"], len(produced), "node")]
            return outs[_index(spec["index"], len(outs), "output")]
        if isinstance(spec, dict) and set(spec) == {"value"}:
            return spec["value"]
        raise ValueError(f"Functional.from_config: a call's argument must name an input or a call's output, got "
                         f"{spec!r:.100}")

    for spec in _field(config, "nodes", list):
        if not isinstance(spec, dict):
            raise ValueError(f"Functional.from_config: a call must be a dict, got {spec!r:.100}")
        layer = layers[_index(spec.get("layer"), len(layers), "layer")]
        kwargs = spec.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise ValueError(f"Functional.from_config: a call's kwargs must be a dict, got {kwargs!r:.100}")
        node = Node(layer, tensor(spec.get("x")), {k: tensor(v) for k, v in kwargs.items()},
                    True if spec.get("training") is True else None, layer.name)
        count = _index(spec.get("outputs", 1) - 1, 64, "outputs count") + 1
        for i in range(count):
            node.outputs.append(SymbolicTensor((None,), None, node, i, None))
        produced.append(node.outputs)
    outputs = [tensor(s) for s in _field(config, "outputs", list)]
    return cls(inputs if config.get("many_inputs", len(inputs) > 1) else inputs[0],
               outputs if config.get("many_outputs", len(outputs) > 1) else outputs[0],
               name=config.get("name"), dtype=config.get("dtype"), _build=False)


def _placeholder(spec):
    shape = tuple(spec["shape"])
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"Functional.from_config: an input's shape must hold positive sizes, got {spec['shape']!r:.100}")
    dtype = numpy.dtype(spec.get("dtype", "float32"))
    node = Node(None, None, {}, None, str(spec.get("name", "input")))
    node.explicit_dtype = True
    t = SymbolicTensor((None,) + shape, dtype, node, 0, _LazyZeros((1,) + shape, dtype))
    node.outputs.append(t)
    return t


class _LazyZeros:
    """The example of an input rebuilt from a config: its shape and dtype, zeros made only when asked."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


def _field(config, key, kind):
    value = config.get(key) if isinstance(config, dict) else None
    if not isinstance(value, kind):
        raise ValueError(f"Functional.from_config: field {key!r} must be a {kind.__name__}, got {value!r:.100}")
    return value


def _index(value, n, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise ValueError(f"Functional.from_config: {what} index {value!r} is not one of the {n} defined before it")
    return value


def _spec(value, where, what):
    if isinstance(value, SymbolicTensor):
        return where[id(value)]
    if isinstance(value, (list, tuple)):
        return [_spec(v, where, what) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise ValueError(f"Functional.get_config: {what} is a {type(value).__name__}, which a config cannot hold")
