"""Keras's layers, thin: each holds its Parameters and calls ``sn.ops``.

Names, arguments, defaults and weight layouts are Keras's, so that
``get_weights()`` of a Keras layer loads into the scratchnet one unchanged:

=============================  ====================  ===========================================================================================================
layer                          file                  weights (Keras order and layout)
=============================  ====================  ===========================================================================================================
``Dense``                      ``core.py``           ``kernel`` (C, K), ``bias`` (K,)
``Conv2D``                     ``conv.py``           ``kernel`` (kh, kw, C, O) (HWIO), ``bias`` (O,)
``DepthwiseConv2D``            ``depthwise.py``      ``depthwise_kernel`` (kh, kw, C, M), ``bias`` (C*M,); ``Conv2D(groups=g)``: kernel (kh, kw, C/g, O)
``Conv2DTranspose``            ``conv.py``           ``kernel`` (kh, kw, F, C) (output channels first), ``bias`` (F,)
``MaxPool2D``                  ``conv.py``           none
``AveragePooling2D``           ``pooling.py``        none (likewise ``GlobalAveragePooling2D``, ``GlobalMaxPooling2D``)
``LSTM``                       ``recurrent.py``      ``kernel`` (D, 4H), ``recurrent_kernel`` (H, 4H), ``bias`` (4H,); gates i, f, c, o
``GRU``                        ``rnn.py``            ``kernel`` (D, 3H), ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H); gates z, r, h (``reset_after=True``)
``SimpleRNN``                  ``rnn.py``            ``kernel`` (D, H), ``recurrent_kernel`` (H, H), ``bias`` (H,)
``Bidirectional``              ``rnn.py``            the forward layer's, then the backward copy's (``forward_<name>/``, ``backward_<name>/``)
``Embedding``                  ``embedding.py``      ``embeddings`` (V, D); ``mask_zero=True`` masks id 0
``Masking``                    ``masking.py``        none: masks the steps whose features all equal ``mask_value``
``LayerNormalization``         ``normalization.py``  ``gamma`` (C,), ``beta`` (C,)
``BatchNormalization``         ``normalization.py``  ``gamma``, ``beta``, ``moving_mean``, ``moving_variance`` (C,) each
``MultiHeadAttention``         ``attention.py``      ``query/kernel`` (Dq, h, key_dim), ``query/bias`` (h, key_dim), the same for ``key/``
                                                     and ``value/`` (value_dim), ``attention_output/kernel`` (h, value_dim, Do), ``attention_output/bias`` (Do,)
``TokenAndPositionEmbedding``  ``transformer.py``    ``token_embedding/embeddings`` (V, D), ``position_embedding/embeddings`` (T, D)
``TransformerBlock``           ``transformer.py``    its ``self_attention`` (a MultiHeadAttention), two layer norms and two Dense
``ResidualBlock``              ``residual.py``       ``conv1``, ``bn1``, ``conv2``, ``bn2`` (and ``shortcut_conv``, ``shortcut_bn``)
``Dropout``                    ``core.py``           none (likewise ``Flatten``, ``Reshape``, ``Activation``, ``LogSoftmax``)
``Add``, ``Concatenate``, ...  ``merge.py``          none (``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Concatenate``: a list of inputs)
=============================  ====================  ===========================================================================================================

Every layer's ``forward(x, training) -> (y, backprop)``; ``backprop(dy)``
adds the weight gradients to ``p.grad`` and returns ``dx`` (``None`` for
Embedding, whose integer input has no gradient). Masks follow Keras's protocol:
:attr:`Layer.supports_masking`, :attr:`Layer.takes_mask`, :meth:`Layer.compute_mask`
(``docs/derivations/lstm.md``, "Masks"). The base class is
:class:`Layer` (``base.py``); :func:`register` makes a custom layer
serializable like a built-in one.
"""
from ..serialization import deserialize, register, serialize
from .attention import MultiHeadAttention
from .base import Layer
from .conv import Conv2D, Conv2DTranspose, MaxPool2D, MaxPooling2D
from .core import Activation, Dense, Dropout, Flatten, LogSoftmax, Reshape
from .depthwise import DepthwiseConv2D
from .embedding import Embedding
from .masking import Masking
from .merge import Add, Average, Concatenate, Multiply, Subtract
from .normalization import BatchNormalization, LayerNormalization
from .pooling import (
    AveragePooling2D,
    AvgPool2D,
    GlobalAveragePooling2D,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    GlobalMaxPooling2D,
)
from .recurrent import LSTM
from .residual import ResidualBlock
from .rnn import GRU, Bidirectional, SimpleRNN
from .transformer import TokenAndPositionEmbedding, TransformerBlock, sine_position_encoding

__all__ = [
    "Activation", "Add", "Average", "AveragePooling2D", "AvgPool2D", "BatchNormalization", "Bidirectional",
    "Concatenate", "Conv2D", "Conv2DTranspose", "Dense", "DepthwiseConv2D", "Multiply", "Subtract",
    "Dropout", "Embedding", "Flatten", "GRU", "GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPool2D",
    "GlobalMaxPooling2D", "LSTM", "Layer", "LayerNormalization", "LogSoftmax", "Masking", "MaxPool2D", "MaxPooling2D",
    "MultiHeadAttention", "Reshape", "ResidualBlock", "SimpleRNN", "TokenAndPositionEmbedding", "TransformerBlock", "deserialize",
    "register", "serialize", "sine_position_encoding",
]
