"""The state a checkpoint carries besides the weights, matched to the model's parameters and layers: optimizer
slots, moving averages and a stateful layer's carried state, checked (shapes, owners) before :meth:`Checkpoint.restore`
changes anything, and cast to their parameters' dtypes."""
from __future__ import annotations


def _stateful_layers(model):
    """``{key: layer}`` of the layers that carry a state from batch to batch (a stateful LSTM).

    The key is the scope of the layer's weights (``charlm/lstm``), which
    names the layer the same way in every process that builds the model.
    """
    walk = getattr(model, "walk", None)
    found = {}
    for layer in (walk() if walk is not None else ()):
        if getattr(layer, "stateful", False) and hasattr(layer, "states"):
            weights = list(layer.parameters())
            key = weights[0].name.rsplit("/", 1)[0] if weights else layer.name
            found[key] = layer
    return found


def _check_carried_states(saved, stateful, strict):
    """Problems restoring the carried states ``saved`` (``{key: [arrays]}``) into the stateful layers."""
    problems = []
    for key, arrays in saved.items():
        layer = stateful.get(key)
        if layer is None:
            if strict:
                problems.append(f"carried state of {key!r} in the checkpoint, but the model has no stateful layer {key!r}")
            continue
        units = getattr(layer, "units", None)
        shapes = [tuple(a.shape) for a in arrays]
        if len(arrays) != 2 or any(len(s) != 2 or (units is not None and s[1] != units) for s in shapes) \
                or len(set(shapes)) != 1:
            problems.append(f"carried state of {key!r}: shapes {shapes}, expected two (batch, {units}) arrays")
    return problems


def _check_state_shapes(what, state, by_name, param_of):
    problems = []
    for key, a in state.items():
        pname = param_of(key)
        if pname is None:
            continue
        p = by_name.get(pname)
        if p is None:
            problems.append(f"{what} {key!r} belongs to a parameter the model does not have")
        elif tuple(a.shape) != tuple(p.shape):
            problems.append(f"{what} {key!r} has shape {tuple(a.shape)} but {pname} has {p.shape}")
    return problems


def _slot_parameter(key):
    """The parameter an optimizer state entry belongs to: ``"dense/kernel:m"`` -> ``"dense/kernel"``;
    None for ``"iterations"``."""
    return key.rpartition(":")[0] if ":" in key else None


def _shadow_parameter(key):
    """The parameter a moving average belongs to: the shadows are keyed by parameter name."""
    return key


def _cast_to_parameters(state, by_name, param_of):
    """``state`` with each array that belongs to a parameter cast to that parameter's dtype (others as they are)."""
    cast = {}
    for key, a in state.items():
        p = by_name.get(param_of(key)) if param_of(key) is not None else None
        cast[key] = a if p is None else a.astype(p.dtype, copy=False)
    return cast


def _check_weight_values(model, plan, arrays):
    """Problems with values the layers cannot hold: ``{checkpoint name: parameter}`` checked by each layer that
    declares a ``check_weight_value(parameter, array)`` (BatchNormalization: a negative or non-finite
    ``moving_variance``, a non-finite ``moving_mean``), before :meth:`Checkpoint.restore` changes anything."""
    walk = getattr(model, "walk", None)
    layers = list(walk() if walk is not None else ())
    checks = {}
    while layers:  # the model's tree, and the parts of a layer made of layers (a ResidualBlock's batch norms)
        layer = layers.pop()
        layers += getattr(layer, "_sublayers", lambda: [])()
        check = getattr(layer, "check_weight_value", None)
        if check is not None:
            for p in layer.parameters():
                checks[id(p)] = check
    problems = []
    for src, p in plan.items():
        check = checks.get(id(p))
        if check is not None and src in arrays and arrays[src].dtype.kind == "f" and tuple(arrays[src].shape) == p.shape:
            problem = check(p, arrays[src])
            if problem:
                problems.append(f"{src}: {problem}")
    return problems
