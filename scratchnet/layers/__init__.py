"""Keras's layers, thin: each holds its Parameters and calls ``sn.ops``.

Names, arguments, defaults and weight layouts are Keras's, so that
``get_weights()`` of a Keras layer loads into the scratchnet one unchanged:

======================  ==================  ==================================================================================
layer                   file                weights (Keras order and layout)
======================  ==================  ==================================================================================
``Dense``               ``core.py``         ``kernel`` (C, K), ``bias`` (K,)
``Conv2D``              ``conv.py``         ``kernel`` (kh, kw, C, O) (HWIO), ``bias`` (O,)
``MaxPool2D``           ``conv.py``         none
``AveragePooling2D``    ``pooling.py``      none (likewise ``GlobalAveragePooling2D``, ``GlobalMaxPooling2D``)
``LSTM``                ``recurrent.py``    ``kernel`` (D, 4H), ``recurrent_kernel`` (H, 4H), ``bias`` (4H,); gates i, f, c, o
``Embedding``           ``embedding.py``    ``embeddings`` (V, D)
``Dropout``             ``core.py``         none (likewise ``Flatten``, ``Reshape``, ``Activation``, ``LogSoftmax``)
======================  ==================  ==================================================================================

Every layer's ``forward(x, training) -> (y, backprop)``; ``backprop(dy)``
adds the weight gradients to ``p.grad`` and returns ``dx`` (``None`` for
Embedding, whose integer input has no gradient). The base class is
:class:`Layer` (``base.py``); :func:`register` makes a custom layer
serializable like a built-in one.
"""
from ..serialization import deserialize, register, serialize
from .base import Layer
from .conv import Conv2D, MaxPool2D, MaxPooling2D
from .core import Activation, Dense, Dropout, Flatten, LogSoftmax, Reshape
from .embedding import Embedding
from .pooling import (
    AveragePooling2D,
    AvgPool2D,
    GlobalAveragePooling2D,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    GlobalMaxPooling2D,
)
from .recurrent import LSTM

__all__ = [
    "LSTM", "Activation", "AveragePooling2D", "AvgPool2D", "Conv2D", "Dense", "Dropout", "Embedding", "Flatten",
    "GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D", "GlobalMaxPooling2D", "Layer", "LogSoftmax", "MaxPool2D",
    "MaxPooling2D", "Reshape", "deserialize", "register", "serialize",
]
