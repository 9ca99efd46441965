"""Softmax cross-entropy, fused: the loss of the softmax of logits against labels."""
from __future__ import annotations

from .._checks import as_float_arrays, scalar_grad
from ..backend import get_backend
from .embedding import check_ids


class LossKernels:
    """Reference kernels for softmax cross-entropy over rows of logits."""

    def softmax_xent_forward(self, logits, labels):
        """Per-row cross-entropy and softmax probabilities.

        Parameters
        ----------
        logits : array of shape (M, K)
        labels : integer array of shape (M,), or float array of shape (M, K)
            Class ids, or a distribution over the classes per row (one-hot or soft).

        Returns
        -------
        losses : array of shape (M,)
            ``-sum_k labels[m, k] * log softmax(logits[m])_k``
        probs : array of shape (M, K)
            ``softmax(logits)``, kept for the backward pass.
        """
        xp = self.xp
        # log-sum-exp: after subtracting the row max, exp never overflows and
        # log softmax is finite even where the probability underflows to 0.
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        probs = xp.exp(log_probs)
        if labels.ndim == 1:
            losses = -log_probs[xp.arange(logits.shape[0]), labels]
        else:
            losses = -(labels * log_probs).sum(axis=1)
        return losses, probs

    def softmax_xent_backward(self, probs, labels, scale):
        """Gradient of ``scale * losses`` with respect to the logits.

        Parameters
        ----------
        probs : array of shape (M, K)
        labels : integer array of shape (M,), or float array of shape (M, K)
        scale : float
            Gradient of the loss value with respect to each row's loss.

        Returns
        -------
        dlogits : array of shape (M, K)
            ``scale * (probs - onehot(labels))``, or ``scale * (probs - labels)``
            for a distribution.
        """
        xp = self.xp
        if labels.ndim == 1:
            dlogits = probs * scale
            dlogits[xp.arange(probs.shape[0]), labels] -= scale
            return dlogits
        # Exact when each row of labels sums to 1 (the exact gradient is
        # probs * sum(labels) - labels); TensorFlow makes the same assumption.
        return scale * (probs - labels)


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
        ``dloss * (softmax(logits) - onehot(labels)) / M`` for M positions.
    """
    be = get_backend()
    (logits,) = as_float_arrays("softmax_cross_entropy", be, logits=logits)
    if logits.ndim < 1:
        raise ValueError("softmax_cross_entropy: logits must have rank >= 1 [..., K], got a scalar")
    K = logits.shape[-1]
    if K < 1:
        raise ValueError(f"softmax_cross_entropy: logits must have at least one class, got shape {tuple(logits.shape)}")
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
        raise ValueError(f"softmax_cross_entropy: logits hold no positions to average over (logits: {tuple(logits.shape)})")
    losses, probs = be.softmax_xent_forward(logits.reshape(M, K), labels)
    loss = losses.mean()

    def backprop(dloss=1.0):
        scale = scalar_grad("softmax_cross_entropy", be, dloss)
        dlogits = be.softmax_xent_backward(probs, labels, scale / M)
        return dlogits.reshape(logits.shape)

    return loss, backprop
