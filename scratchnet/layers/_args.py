"""Argument checks and activation lookup shared by the layers."""
from __future__ import annotations

import numbers

from .. import ops

# Activations by Keras name; None and "linear" are the identity.
_ACTIVATIONS = {"relu": ops.relu, "sigmoid": ops.sigmoid, "tanh": ops.tanh, "softmax": ops.softmax,
                "log_softmax": ops.log_softmax, "gelu": ops.gelu}


def activation_name(layer, name):
    if name is None or name == "linear":
        return None
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(f"{layer}: unknown activation {name!r}; choose one of None, 'linear', {', '.join(map(repr, _ACTIVATIONS))}")
    return name


def fused_activation(name):
    """The activation a producing op (``dense``, ``conv2d``) can apply in its kernel: ``"relu"``, else ``None``."""
    return name if name in ops.activations.FUSED_ACTIVATIONS else None


def activate(name, Y, fused=False):
    """``(Y, backprop)`` of the activation ``name`` (the identity for ``None``).

    ``fused``: the op that produced ``Y`` applied it already (``activation=`` of
    ``ops.dense`` / ``ops.conv2d``); it is then only reported to the recorders
    (:func:`scratchnet.ops.activations.applied_relu`), at no cost.
    """
    if name is None:
        return Y, lambda dY: dY
    if fused:
        return ops.activations.applied_relu(Y)
    return _ACTIVATIONS[name](Y)


def activated_with_weights(activation, Z, op_backprop, kernel, bias, fused=False):
    """``(Y, backprop)`` of a layer whose op computed ``Z`` from its ``kernel`` and ``bias`` (Parameters; ``bias``
    may be None), then ``activation``: ``backprop(dY)`` runs the activation's backward and the op's
    ``(dX, dW, db)``, adds ``dW`` and ``db`` to the weights (the op's new arrays, held without a copy) and
    returns ``dX``. Dense, Conv2D (plain and grouped), Conv2DTranspose and DepthwiseConv2D share it."""
    Y, act_backprop = activate(activation, Z, fused=fused)

    def backprop(dY):
        dX, dW, db = op_backprop(act_backprop(dY))
        kernel.accumulate(dW, fresh=True)
        if bias is not None:
            bias.accumulate(db, fresh=True)
        return dX

    return Y, backprop


def padding_name(layer, padding):
    """``"valid"`` or ``"same"`` (Keras's names, any case), or an explicit padding as ``((top, bottom), (left,
    right))`` (from an int, a pair or that form: :func:`scratchnet.ops.shapes.explicit_pads`)."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(f"{layer}: padding must be 'valid', 'same', an int, a pair or ((top, bottom), "
                             f"(left, right)), got {padding!r}")
        return padding.lower()
    top, bottom, left, right = ops.shapes.explicit_pads(layer, padding)
    return ((top, bottom), (left, right))


def op_padding(padding):
    """A layer's padding as the ops take it: ``"VALID"`` / ``"SAME"``, or the explicit pairs as they are."""
    return padding.upper() if isinstance(padding, str) else padding


def positive_int(layer, name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {v!r}")
    return int(v)
