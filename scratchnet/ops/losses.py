"""Softmax cross-entropy, fused: the loss of the softmax of logits against labels.

Notation::

    M     positions the loss averages over (N for a classifier, N*T for a sequence model)
    K     classes
    z     logits, (M, K);  p = softmax(z) row by row
    t     targets, (M, K): onehot(labels) for class ids, or the given distributions

Forward, per row ``m`` (by log-sum-exp, so it stays finite for any finite
logits; never ``log(p + eps)``)::

    log p[m, k] = z[m, k] - lse(z[m]),   lse(z[m]) = max_k z[m, k] + log sum_k exp(z[m, k] - max_k z[m, k])
    loss_m      = -sum_k t[m, k] * log p[m, k]
    L           = (1/M) sum_m loss_m

Backward, step by step, for one row (drop the ``m``):

1. ``log p_k = z_k - lse(z)`` and ``∂lse/∂z_j = exp(z_j) / sum_k exp(z_k) = p_j``, so
   ``∂ log p_k / ∂z_j = delta_kj - p_j``.
2. ``∂loss/∂z_j = -sum_k t_k (delta_kj - p_j) = -t_j + p_j * sum_k t_k``.
3. Each row of ``t`` sums to 1 (one-hot, or a distribution), so
   ``∂loss/∂z_j = p_j - t_j``: for class ids, ``probs - onehot(labels)``.
   (For float labels whose rows do not sum to 1 this is not exact; TensorFlow
   makes the same assumption.)
4. The mean: ``∂L/∂z[m, j] = (p[m, j] - t[m, j]) / M``.
5. The upstream gradient: ``L`` is a scalar, and with ``dloss = ∂(final)/∂L``
   (1 when ``L`` is itself the objective) the chain rule multiplies by it:
   ``dz = dloss / M * (p - t)``. The kernel gets ``scale = dloss / M``.
"""
from __future__ import annotations

from .._checks import as_float_arrays, check_ids, scalar_grad
from ..backend import get_backend
from ..recording import Cost, nbytes
from ..recording import op as recorded_op


class LossReference:
    """Reference kernels for softmax cross-entropy over rows of logits."""

    def softmax_cross_entropy_forward(self, logits, labels):
        """Log-sum-exp after subtracting the row max: exp never overflows, and log p is
        finite even where p underflows to 0."""
        xp = self.xp
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        probs = xp.exp(log_probs)
        if labels.ndim == 1:
            # t is one-hot: the sum over k keeps only k = labels[m].
            losses = -log_probs[xp.arange(logits.shape[0]), labels]
        else:
            losses = -(labels * log_probs).sum(axis=1)
        return losses, probs

    def softmax_cross_entropy_backward(self, probs, labels, scale):
        """``scale * (probs - t)`` (steps 3-5 of the module docstring)."""
        xp = self.xp
        if labels.ndim == 1:
            # scale * (probs - onehot): subtract scale at each row's label only.
            dlogits = probs * scale
            dlogits[xp.arange(probs.shape[0]), labels] -= scale
            return dlogits
        # Exact when each row of labels sums to 1 (the exact gradient is
        # probs * sum(labels) - labels); TensorFlow makes the same assumption.
        return scale * (probs - labels)


def softmax_cross_entropy_cost(logits, labels):
    """FLOPs and bytes of :func:`softmax_cross_entropy`: max, exp, sum, log per row; ``probs - onehot`` backward."""
    return Cost(flops=5.0 * logits.size, bytes=2 * nbytes(logits) + nbytes(labels),
                backward_flops=2.0 * logits.size, backward_bytes=2 * nbytes(logits) + nbytes(labels))


@recorded_op("softmax_cross_entropy", cost=softmax_cross_entropy_cost)
def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy between ``softmax(logits)`` and the labels.

    Parameters
    ----------
    logits : array of shape (..., K)
        For instance (N, K) for a classifier, (N, T, V) for a sequence model.
    labels : integer array of shape logits.shape[:-1], or float array of logits.shape
        Class ids in ``[0, K)``, or a distribution over the classes at each position.

    Returns
    -------
    loss : scalar
        The cross-entropy averaged over every leading position (all of N, or
        all of N*T), computed by log-sum-exp so that it stays finite for any
        finite logits.
    backprop : callable
        ``backprop(dloss=1.0) -> dlogits`` of logits' shape,
        ``dloss * (softmax(logits) - onehot(labels)) / M`` for M positions
        (derived in the module docstring).
    """
    be = get_backend()
    (logits,) = as_float_arrays("softmax_cross_entropy", be, logits=logits)
    if logits.ndim < 1:
        raise ValueError("softmax_cross_entropy: logits must have rank >= 1 [..., K], got a scalar")
    K = logits.shape[-1]
    if K < 1:
        raise ValueError(
            f"softmax_cross_entropy: logits must have at least one class, got shape {tuple(logits.shape)}"
        )
    M = logits.size // K
    lead = tuple(logits.shape[:-1])
    labels = be.native("softmax_cross_entropy", "labels", labels)
    if labels.dtype.kind in "iu":
        if tuple(labels.shape) != lead:
            raise ValueError(
                f"softmax_cross_entropy: integer labels must have shape logits.shape[:-1] = {lead}, "
                f"got {tuple(labels.shape)} (logits: {tuple(logits.shape)})"
            )
        labels = check_ids("softmax_cross_entropy", be, "labels", labels, K, f"logits have {K} classes")
        labels = labels.reshape(M)
    elif labels.dtype.kind == "f":
        logits, labels = as_float_arrays("softmax_cross_entropy", be, logits=logits, labels=labels)
        if tuple(labels.shape) != tuple(logits.shape):
            raise ValueError(
                f"softmax_cross_entropy: float labels must have the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        labels = labels.reshape(M, K)
    else:
        raise ValueError(
            f"softmax_cross_entropy: labels must be integer class ids or float distributions, got {labels.dtype}"
        )
    if M == 0:
        raise ValueError(
            f"softmax_cross_entropy: logits hold no positions to average over (logits: {tuple(logits.shape)})"
        )
    losses, probs = be.softmax_cross_entropy_forward(logits.reshape(M, K), labels)
    loss = losses.mean()

    def backprop(dloss=1.0):
        scale = scalar_grad("softmax_cross_entropy", be, dloss)
        # Step 4 (the mean, 1/M) and step 5 (the upstream dloss) fold into one scale.
        dlogits = be.softmax_cross_entropy_backward(probs, labels, scale / M)
        return dlogits.reshape(logits.shape)

    return loss, backprop
