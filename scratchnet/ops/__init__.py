"""The ops: hand-written forward and backward passes.

Every op returns ``(output, backprop)``; ``backprop`` takes the gradient of
the output and returns the gradients of the inputs, computed by hand.

===============================================================  =========================================================
call                                                             ``backprop(...)`` returns
===============================================================  =========================================================
``dense(x, w, b=None)``                                          ``(dx, dw, db)``
``conv2d(x, w, b=None, strides=1, padding)``                     ``(dx, dw, db)``
``conv2d_transpose(x, w, b=None, strides=1, padding)``           ``(dx, dw, db)``
``grouped_conv2d(x, w, b=None, strides, padding, groups)``        ``(dx, dw, db)``
``depthwise_conv2d(x, w, b=None, strides, padding)``              ``(dx, dw, db)``
``max_pool2d(x, ksize, strides, padding)``                       ``dx``
``avg_pool2d(x, ksize, strides, padding)``                       ``dx``
``global_avg_pool2d`` / ``global_max_pool2d(x)``                 ``dx``
``lstm(x, kernel, recurrent_kernel, bias, h0, c0)``              ``(dx, dkernel, drecurrent_kernel, dbias, dh0, dc0)``
``gru`` / ``simple_rnn(x, kernel, recurrent_kernel, bias, h0)``  ``(dx, dkernel, drecurrent_kernel, dbias, dh0)``
``embedding(ids, table)``                                        ``dtable``
``embedding_lstm(ids, table, kernel, ...)``                      ``(dtable, dkernel, drecurrent_kernel, dbias, dh0, dc0)``
``relu`` / ``sigmoid`` / ``tanh`` / ``softmax``                  ``dx``
``gelu(x, approximate=False)``                                   ``dx``
``log_softmax(x, axis=-1)``                                      ``dx``
``dropout(x, rate, seed=None)``                                  ``dx``
``layer_norm(x, gamma, beta, epsilon=1e-3)``                     ``(dx, dgamma, dbeta)``
``batch_norm(x, gamma, beta, epsilon=1e-3)``                     ``(dx, dgamma, dbeta)``
``attention(q, k, v, mask=None, causal=False)``                  ``(dq, dk, dv)``
``softmax_cross_entropy(logits, labels)``                        ``dlogits``
``add`` / ``subtract`` / ``multiply`` / ``average(xs)``          ``[dx_1, dx_2, ...]``
``concatenate(xs, axis=-1)``                                     ``[dx_1, dx_2, ...]``
===============================================================  =========================================================

Each op family has one file (``dense.py``, ``conv.py``, ...) holding the op,
its derivation and its NumPy reference kernels. The rest of this folder:

- ``contract.py``: ``Ops``, every kernel a backend provides, with its shapes
  (the recurrent ones in ``contract_recurrent.py``);
- ``reference.py``: ``ReferenceOps``, the ``numpy`` backend, built from the
  reference kernels of each family;
- ``backends.py``: how each backend (numpy, numba, cupy) is built;
- ``shapes.py``: output sizes and TensorFlow's padding rule.
"""
from .activations import gelu, log_softmax, relu, sigmoid, softmax, tanh
from .attention import attention
from .conv import conv2d
from .conv_transpose import conv2d_transpose
from .dense import dense
from .dropout import dropout
from .embedding import embedding
from .grouped_conv import depthwise_conv2d, grouped_conv2d
from .gru import gru, simple_rnn
from .losses import softmax_cross_entropy
from .lstm import embedding_lstm, lstm
from .merge import add, average, concatenate, multiply, subtract
from .normalization import batch_norm, layer_norm
from .pooling import avg_pool2d, global_avg_pool2d, global_max_pool2d, max_pool2d

__all__ = [
    "add",
    "attention",
    "average",
    "concatenate",
    "multiply",
    "subtract",
    "avg_pool2d",
    "batch_norm",
    "conv2d",
    "conv2d_transpose",
    "dense",
    "depthwise_conv2d",
    "dropout",
    "embedding",
    "embedding_lstm",
    "gelu",
    "global_avg_pool2d",
    "global_max_pool2d",
    "grouped_conv2d",
    "gru",
    "layer_norm",
    "log_softmax",
    "lstm",
    "max_pool2d",
    "relu",
    "sigmoid",
    "simple_rnn",
    "softmax",
    "softmax_cross_entropy",
    "tanh",
]
