"""``Model.summary``: Keras's table of layers, output shapes and parameter counts."""
from __future__ import annotations

import math


def summary(model, print_fn=print):
    """Print (with ``print_fn``) and return the table of ``model``'s layers, output shapes and parameter counts."""
    from .base import Model

    rows = [("Layer (type)", "Output Shape", "Param #")]
    for layer in model.layers:
        shape = "?" if layer.output_shape is None else _format_shape(layer.output_shape)
        built = layer.built or (isinstance(layer, Model) and any(True for _ in layer.parameters()))
        rows.append((f"{layer.name} ({type(layer).__name__})", shape, str(layer.count_params()) if built else "0 (unbuilt)"))
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
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


def _format_shape(shape):
    if isinstance(shape, list):
        return ", ".join(_format_shape(s) for s in shape)
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"
