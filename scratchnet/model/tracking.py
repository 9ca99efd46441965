"""A model's tree: the layers it holds, their names, and the one place a layer's dtype is settled.

``Model.__setattr__`` (a layer assigned as an attribute) and
``Sequential.add`` both come here (:func:`track`). A layer joins the model
once, in assignment order (the weight order); a second layer with an
automatic name already taken is renamed ``<name>_1``, ``<name>_2``, ...

Dtypes (:func:`settle_dtypes`): a model has one. It is the model's own when
it was given one (``Sequential(..., dtype="float64")``), else the one its
layers were given, else :func:`scratchnet.floatx`; every layer created
without a dtype takes the model's, and a layer given another one is an
error naming both. The rule runs whenever the tree changes (a layer added,
the model put in an outer model), here and nowhere else.
"""
from __future__ import annotations


def track(model, layer):
    """Make ``layer`` one of ``model``'s layers (once), name it uniquely, and settle the dtypes."""
    if layer is model:
        raise ValueError(f"{model.name}: a model cannot contain itself")
    if any(layer is other for other in model._layers):
        return
    taken = {other.name for other in model._layers}
    if layer._parent is None:
        before = layer._prefix()  # the names its weights have if it was built on its own
        if layer.name in taken:
            if not layer._auto_named:
                raise ValueError(
                    f"{model.name}: two layers are named {layer.name!r}; layer names must be unique in a model"
                )
            base, i = layer.name, 1
            while f"{base}_{i}" in taken:
                i += 1
            layer.name = f"{base}_{i}"
        layer._parent = model
        if layer.built and layer._scope is None:
            _rename_weights(layer, before, layer._prefix())
    model._layers.append(layer)
    settle_dtypes(model)


def _rename_weights(layer, before, after):
    """The weights of a layer built on its own, named as the model it joins names its layers' weights.

    A model built on its own (a functional model always is) names its weights without its own name
    (``dense/kernel``); inside another model they become ``<model>/dense/kernel``, so that they stay
    apart from the outer model's own ``dense``. A layer renamed on joining (``dense`` -> ``dense_1``)
    takes its new name likewise. A layer built under a ``ParameterStore`` scope keeps the names the
    scope gave (they are shared on purpose).
    """
    if before == after:
        return
    for p in layer.parameters():
        if p.name.startswith(before):
            p.name = after + p.name[len(before):]


def settle_dtypes(model, inherited=None):
    """One dtype for ``model`` and its layers: its own, or the one its layers were given (see the module's docstring).

    ``inherited``: the dtype of an outer model that ``model`` (created
    without a dtype) was put in. Raises ValueError when explicit dtypes disagree.
    """
    if inherited is not None:
        model.dtype = inherited
    explicit = [layer for layer in model._layers if layer._dtype_explicit]
    if model._dtype_explicit:
        for layer in explicit:
            if layer.dtype != model.dtype:
                raise ValueError(
                    f"{model.name}: layer {layer.name!r} was given dtype {layer.dtype.name} but the model "
                    f"{type(model).__name__} {model.name!r} has dtype {model.dtype.name}; make them agree, or drop one"
                )
    elif explicit:
        kinds = {layer.dtype for layer in explicit}
        if len(kinds) > 1:
            named = ", ".join(f"{layer.name!r}: {layer.dtype.name}" for layer in explicit)
            raise ValueError(f"{model.name}: its layers were given different dtypes ({named}); use one dtype")
        model.dtype = kinds.pop()
    for layer in model._layers:
        if not layer._dtype_explicit:
            layer._inherit_dtype(model.dtype)

