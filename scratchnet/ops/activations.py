"""Elementwise activations and softmax, each returning ``(y, backprop)``.

Below ``dy`` is always the incoming gradient (of the loss with respect to
``y``) and ``∂y_i/∂x_j`` a derivative of the op itself. An elementwise
``y[i] = f(x[i])`` has a diagonal Jacobian, ``∂y_i/∂x_j = 0`` for ``i != j``,
so its backward is a product, entry by entry::

    dx[i] = sum_j dy[j] * ∂y_j/∂x_i = dy[i] * f'(x[i])

and each derivative below is written in terms of the output ``y`` where that
is cheaper than recomputing from ``x``::

    relu     f(x) = max(x, 0)          f'(x) = 1 if x > 0 else 0 (0 at x = 0, as TensorFlow)
    sigmoid  f(x) = 1 / (1 + e^-x)     f'(x) = e^-x / (1 + e^-x)^2 = y (1 - y)
    tanh     f(x) = tanh(x)            f'(x) = 1 - tanh(x)^2 = 1 - y^2
    gelu     f(x) = x Φ(x)             f'(x) = Φ(x) + x φ(x)   (Φ, φ: the standard normal's CDF and density)

Softmax and log-softmax are not elementwise: every output depends on every
input of its row (derived at :func:`softmax` and :func:`log_softmax`).
"""
from __future__ import annotations

import math

import numpy

from .._checks import as_float_arrays, check_grad
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


class ActivationReference:
    """Reference kernels for the activations (none is hot enough to override yet)."""

    def erf(self, x):
        """The error function, elementwise, in ``x``'s dtype: the C library's ``erf`` (correctly rounded to within
        an ulp or so), one element at a time. NumPy has no ``erf``; a fast backend overrides this."""
        flat = numpy.fromiter((math.erf(v) for v in x.ravel().tolist()), dtype=numpy.float64, count=x.size)
        return flat.reshape(x.shape).astype(x.dtype)

    def sigmoid(self, x):
        """``1 / (1 + exp(-x))``, written so that no ``exp`` overflows."""
        xp = self.xp
        # exp of a non-positive number never overflows; for x < 0,
        # 1 / (1 + e^-x) = e^x / (1 + e^x) = e / (1 + e) with e = e^-|x|.
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


#: The activations a producing kernel (``dense``, ``conv2d``) applies in its epilogue.
FUSED_ACTIVATIONS = (None, "relu")


def check_fused_activation(op, activation):
    """``activation`` of an op that fuses it: True for ``"relu"``, False for ``None``; anything else is an error."""
    if activation not in FUSED_ACTIVATIONS:
        raise ValueError(f"{op}: activation must be None or 'relu' (the one fused into the kernel), got {activation!r}")
    return activation == "relu"


def _elementwise_cost(flops_per_element, backward_flops_per_element):
    def cost(x, axis=-1):
        return Cost(flops=float(flops_per_element * x.size), bytes=2 * nbytes(x),
                    backward_flops=float(backward_flops_per_element * x.size), backward_bytes=3 * nbytes(x))

    cost.__doc__ = (f"FLOPs and bytes of an elementwise activation: {flops_per_element} FLOPs per element "
                    f"forward, {backward_flops_per_element} backward.")
    return cost


# gelu: erf (counted as 10), multiply-adds forward; erf and exp again and the product rule backward.
gelu_cost = _elementwise_cost(14, 20)
relu_cost, sigmoid_cost, tanh_cost, softmax_cost = (_elementwise_cost(1, 1), _elementwise_cost(4, 2),
                                                    _elementwise_cost(4, 2), _elementwise_cost(5, 4))
# log_softmax: max, subtract, exp, sum, log-subtract forward; exp(y), sum(dy), multiply, subtract backward.
log_softmax_cost = _elementwise_cost(5, 4)


def _unary(op, x):
    be = get_backend()
    (x,) = as_float_arrays(op, be, x=x)
    return be, x


def _along_axis(op, x, axis):
    """``_unary`` for an op over slices along ``axis``: ``x`` of rank >= 1 and ``axis`` in range."""
    be, x = _unary(op, x)
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have rank >= 1, got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for x of shape {tuple(x.shape)}")
    return be, x


@recorded_op("relu", cost=relu_cost)
def relu(x):
    """``y = max(x, 0)``, any shape.

    ``backprop(dy) -> dx = dy * (x > 0)``: the gradient is 0 at 0, as in TensorFlow.
    """
    be, x = _unary("relu", x)
    y = be.xp.maximum(x, 0)

    def backprop(dy):
        dy = check_grad("relu", dy, y, be)
        return dy * (x > 0)

    return y, backprop


def _no_cost(y):
    """An applied ReLU does no work of its own: its FLOPs and bytes are the producing op's."""
    return Cost()


@recorded_op("relu", cost=_no_cost)
def applied_relu(y):
    """The ReLU that a producing op (``dense`` or ``conv2d`` with ``activation="relu"``) applied in its kernel.

    Returns ``y`` as it is, and a backprop that is the identity: the producing
    op's backprop applies ReLU's mask. It does no work; it is an op so that
    recorders see the ReLU where the model has it: TensorBoard's graph draws a
    ``relu`` node after the ``dense`` one, and ``sn.profile()`` shows a
    ``relu`` row whose (nil) time says the fusion left nothing to do.
    """
    return y, lambda dy: dy


@recorded_op("sigmoid", cost=sigmoid_cost)
def sigmoid(x):
    """``y = 1 / (1 + exp(-x))``, any shape.

    ``backprop(dy) -> dx = dy * y * (1 - y)``, since ``sigmoid'(x) = y (1 - y)``.
    """
    be, x = _unary("sigmoid", x)
    y = be.sigmoid(x)

    def backprop(dy):
        dy = check_grad("sigmoid", dy, y, be)
        return dy * y * (1 - y)

    return y, backprop


@recorded_op("tanh", cost=tanh_cost)
def tanh(x):
    """``y = tanh(x)``, any shape.

    ``backprop(dy) -> dx = dy * (1 - y**2)``, since ``tanh'(x) = 1 - tanh(x)^2``.
    """
    be, x = _unary("tanh", x)
    y = be.xp.tanh(x)

    def backprop(dy):
        dy = check_grad("tanh", dy, y, be)
        return dy * (1 - y * y)

    return y, backprop


@recorded_op("softmax", cost=softmax_cost)
def softmax(x, axis=-1):
    """``y = exp(x - max x) / sum exp(x - max x)`` along ``axis``, any shape.

    Subtracting the max changes nothing (it cancels between numerator and
    denominator) and keeps every ``exp`` at most 1.

    Backward, for one slice along ``axis`` (``y_i = e^{x_i} / sum_k e^{x_k}``).
    The Jacobian::

        ∂y_i/∂x_j = y_i (delta_ij - y_j),   i.e.  J = diag(y) - y y^T   (symmetric)

    and its product with the incoming gradient::

        dx_j = sum_i dy_i * ∂y_i/∂x_j = sum_i dy_i y_i (delta_ij - y_j)
             = y_j dy_j - y_j sum_i dy_i y_i
             = y_j (dy_j - sum_i dy_i y_i)

    so ``backprop(dy) -> dx = y * (dy - sum(dy * y, axis))``, without forming ``J``.
    """
    be, x = _along_axis("softmax", x, axis)
    xp = be.xp
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)

    def backprop(dy):
        dy = check_grad("softmax", dy, y, be)
        return y * (dy - (dy * y).sum(axis=axis, keepdims=True))

    return y, backprop


@recorded_op("log_softmax", cost=log_softmax_cost)
def log_softmax(x, axis=-1):
    """``y = log softmax(x) = x - max x - log sum exp(x - max x)`` along ``axis``, any shape.

    Log-sum-exp after subtracting the max: every ``exp`` is at most 1 and one
    of them is exactly 1, so the ``log`` never sees 0 and ``y`` is finite for
    any finite ``x``, even where ``softmax(x)`` underflows to 0 (never
    ``log(softmax(x) + eps)``).

    Backward, for one slice along ``axis`` (``y_i = x_i - log sum_k e^{x_k}``,
    ``p = softmax(x) = exp(y)``). Since ``∂/∂x_j log sum_k e^{x_k} = p_j``, the Jacobian::

        ∂y_i/∂x_j = delta_ij - p_j,   i.e.  J = I - 1 p^T   (not symmetric)

    and its product with the incoming gradient::

        dx_j = sum_i dy_i * ∂y_i/∂x_j = sum_i dy_i (delta_ij - p_j)
             = dy_j - p_j sum_i dy_i

    so ``backprop(dy) -> dx = dy - exp(y) * sum(dy, axis)``, without forming ``J``.
    """
    be, x = _along_axis("log_softmax", x, axis)
    xp = be.xp
    shifted = x - x.max(axis=axis, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))

    def backprop(dy):
        dy = check_grad("log_softmax", dy, y, be)
        return dy - xp.exp(y) * dy.sum(axis=axis, keepdims=True)

    return y, backprop


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@recorded_op("gelu", cost=gelu_cost)
def gelu(x, approximate=False):
    """The Gaussian error linear unit, ``y = x Φ(x)``, any shape (Keras's and PyTorch's ``gelu``).

    Exact (``approximate=False``, the default of Keras and PyTorch), with
    ``Φ(x) = (1 + erf(x / sqrt 2)) / 2`` the standard normal's CDF and
    ``φ(x) = exp(-x^2 / 2) / sqrt(2 pi)`` its density::

        y = x Φ(x)
        dy/dx = Φ(x) + x φ(x)                       (the product rule; Φ' = φ)

    With ``approximate=True`` (``approximate="tanh"`` in PyTorch; GPT-2's form),
    ``u = sqrt(2/pi) (x + 0.044715 x^3)`` and ``t = tanh(u)``::

        y = x (1 + t) / 2
        dy/dx = (1 + t) / 2 + x (1 - t^2) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)

    ``backprop(dy) -> dx = dy * dy/dx``, from the saved ``x`` (not from ``y``:
    GELU is not monotonic below about -0.75, so ``y`` does not determine ``x``).
    """
    if not isinstance(approximate, (bool, numpy.bool_)):
        raise ValueError(f"gelu: approximate must be True or False, got {approximate!r}")
    be, x = _unary("gelu", x)
    xp = be.xp
    half = x.dtype.type(0.5)
    if approximate:
        c, k = x.dtype.type(_SQRT_2_OVER_PI), x.dtype.type(0.044715)
        t = xp.tanh(c * (x + k * x * x * x))
        y = half * x * (1 + t)

        def derivative():
            return half * (1 + t) + half * x * (1 - t * t) * c * (1 + 3 * k * x * x)
    else:
        cdf = half * (1 + be.erf(x * x.dtype.type(_INV_SQRT_2)))
        y = x * cdf

        def derivative():
            return cdf + x * (x.dtype.type(_INV_SQRT_2PI) * xp.exp(-half * x * x))

    def backprop(dy):
        dy = check_grad("gelu", dy, y, be)
        return dy * derivative()

    return y, backprop
