"""``Model.summary``: Keras's table of layers, output shapes and parameter counts."""
from __future__ import annotations

import math


def summary(model, print_fn=print):
    """Print (with ``print_fn``) and return the table of ``model``'s layers, output shapes and parameter counts."""
    from .base import Model

    graph = getattr(model, "_nodes", None)  # a functional model: Keras's "Connected to" column
    rows = [("Layer (type)", "Output Shape", "Param #") + (("Connected to",) if graph is not None else ())]
    if graph is not None:
        for t in model.inputs:
            rows.append((f"{t.node.name} (InputLayer)", _format_shape(t.shape), "0", "-"))
    for layer in model.layers:
        shape = "?" if layer.output_shape is None else _format_shape(layer.output_shape)
        built = layer.built or (isinstance(layer, Model) and any(True for _ in layer.parameters()))
        row = (f"{layer.name} ({type(layer).__name__})", shape, str(layer.count_params()) if built else "0 (unbuilt)")
        if graph is not None:
            row += (_connections(graph, layer),)
        rows.append(row)
    columns = len(rows[0])
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(columns)]
    line = "=" * sum(widths)
    lines = [f'Model: "{model.name}"', "_" * sum(widths), "".join(c.ljust(w) for c, w in zip(rows[0], widths)), line]
    for r in rows[1:]:
        lines.append("".join(c.ljust(w) for c, w in zip(r, widths)))
    params = list(model.parameters())
    trainable = sum(math.prod(p.shape) for p in params if p.trainable)
    total = sum(math.prod(p.shape) for p in params)
    lines += [line, f"Total params: {total}", f"Trainable params: {trainable}", f"Non-trainable params: {total - trainable}"]
    text = "\n".join(lines)
    print_fn(text)
    return text


def _connections(graph, layer):
    """Keras's ``name[call][output]`` of each tensor the layer's calls read, calls separated by ``; ``."""
    calls = {}
    for node in graph:
        calls.setdefault(id(node.layer), []).append(node)

    def call_index(node):
        return 0 if node.layer is None else calls[id(node.layer)].index(node)

    return "; ".join(", ".join(f"{t.node.layer.name if t.node.layer else t.node.name}[{call_index(t.node)}][{t.index}]" for t in node.inputs)
                     for node in calls.get(id(layer), []))


def _format_shape(shape):
    if isinstance(shape, list):
        return ", ".join(_format_shape(s) for s in shape)
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"
