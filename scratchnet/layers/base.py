"""``sn.Layer``: the one base class of every layer and model.

A layer holds parameters and implements two methods:

- ``build(input_shape)`` creates its weights with :meth:`Layer.add_weight`;
- ``call(x, training) -> (y, backprop)`` computes the output with ``sn.ops``.
  ``backprop(dy)`` ADDS each parameter's gradient to ``p.grad``
  (``p.accumulate(g)``) and returns ``dx``.

The first :meth:`Layer.forward` builds the layer from the input's shape.
A :class:`scratchnet.Model` is a layer made of layers and implements the
same ``call``. A minimal custom layer::

    class Scale(sn.Layer):
        def build(self, input_shape):
            self.gamma = self.add_weight("gamma", input_shape[-1:], "ones")

        def call(self, x, training=False):
            y = x * self.gamma.value

            def backprop(dy):
                # y[n, c] = x[n, c] * gamma[c]
                self.gamma.accumulate((dy * x).reshape(-1, x.shape[-1]).sum(axis=0))
                return dy * self.gamma.value

            return y, backprop
"""
from __future__ import annotations

import math
import re
import warnings

import numpy

from .. import initializers, recording, regularizers
from ..backend import get_backend, to_numpy
from ..dtypes import float_dtype, floatx
from ..parameters import NAME, ParameterStore, current_scope
from ..serialization import decode_arguments
from .symbolic import is_symbolic


def _snake(name):
    """Keras's default layer names: ``Conv2D`` -> ``conv2d``, ``MaxPool2D`` -> ``max_pool2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Layer:
    """Base class: a named holder of parameters with ``forward(x, training) -> (y, backprop)``.

    Parameters
    ----------
    name : str, optional
        Defaults to the class name in snake case (``"dense"``); a model makes
        default names unique among its layers (``"dense_1"``).
    dtype : {"float32", "float64"}, optional
        Dtype of the weights; float inputs are cast to it (as Keras does).
        Without one, the layer takes its model's dtype, or else
        :func:`scratchnet.floatx`.

    Class attributes
    ----------------
    takes_ids : bool
        The layer's input is integer ids (an Embedding), not floats: a model
        starting with it is built from an int32 batch.
    takes_need_dx : bool
        ``call`` takes ``need_dx``: told ``need_dx=False`` (nobody wants the
        gradient of its input, as for the first layer of a model trained on
        data), it skips computing ``dx`` and its ``backprop`` returns ``None``.
        A layer without it computes ``dx`` anyway, which is never wrong.
    supports_masking : bool
        Keras's: the layer passes its input's mask on unchanged (:meth:`compute_mask`).
    takes_mask : bool
        ``call`` takes ``mask=``, the input's mask (Keras's ``call(..., mask=None)``); a
        container passes it only when there is one (``forward(x, training, mask=m)``).

    Masks, as Keras's: a boolean array over the leading axes of a sequence
    (``(N, T)``), False at padding. A container runs each layer, passes it the
    mask when it :attr:`takes_mask`, and asks it the mask of its output with
    :meth:`compute_mask`.
    """

    takes_ids = False
    takes_need_dx = False
    supports_masking = False
    takes_mask = False
    #: A container's own name is not part of its weights' names when it is
    #: outermost (as in TF 1's ``get_variable``); a lone layer's is.
    _names_weights = True

    def __init__(self, name=None, dtype=None):
        if name is not None and (not isinstance(name, str) or not NAME.fullmatch(name) or "/" in name):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string without '/', got {name!r}")
        self._auto_named = name is None
        self.name = name if name is not None else _snake(type(self).__name__)
        self._dtype_explicit = dtype is not None
        self.dtype = float_dtype(type(self).__name__, dtype if dtype is not None else floatx())
        self._scope = current_scope()
        self._parent = None
        self._own_store = None
        self._weights = []
        self._parts = []  # the layers this one is made of (_add_part), in weight order after its own weights
        self.built = False
        self.input_shape = None
        self.output_shape = None

    # -- the tree ----------------------------------------------------------------------
    def _sublayers(self):
        return list(self._parts)

    def _add_part(self, layer):
        """Make ``layer`` part of this one (a block made of layers): its weights are named
        ``<this layer>/<its name>/...``, it takes this layer's dtype, and it is walked, saved and restored
        with it. Returns ``layer``."""
        layer._parent = self
        self._parts.append(layer)
        return layer

    def _root(self):
        layer = self
        while layer._parent is not None:
            layer = layer._parent
        return layer

    def _prefix(self):
        """Name prefix of this layer's weights (and of its sublayers' names)."""
        if self._parent is not None:
            return self._parent._prefix() + self.name + "/"
        scope = self._scope.prefix if self._scope is not None else ""
        return scope + self.name + "/" if self._names_weights else scope

    def _store(self):
        root = self._root()
        if root._scope is not None:
            return root._scope.store, root._scope.reuse
        if root._own_store is None:
            root._own_store = ParameterStore()
        return root._own_store, False

    def add_weight(self, name, shape, initializer="zeros", trainable=True, regularizer=None, dtype=None):
        """Create (or, under a reusing scope, fetch) the parameter ``<prefix>/<name>``.

        Parameters
        ----------
        name : str
            Last part of the parameter's name (``"kernel"``).
        shape : tuple of int
        initializer : name, Initializer or callable ``(shape, dtype) -> array``
        trainable : bool
        regularizer : Regularizer or name, optional
        dtype : optional
            Default: the layer's dtype.

        Returns
        -------
        scratchnet.Parameter
        """
        store, reuse = self._store()
        p = store.get(
            self._prefix() + name,
            shape,
            self.dtype if dtype is None else numpy.dtype(dtype),
            initializers.get(initializer),
            reuse=reuse,
            trainable=trainable,
            regularizer=regularizers.get(regularizer),
        )
        self._weights.append(p)
        return p

    # -- the forward pass --------------------------------------------------------------
    def build(self, input_shape):
        """Create the weights for inputs of ``input_shape`` (batch axis included)."""

    def call(self, x, training=False):
        """``(y, backprop)`` for the input ``x``; every layer and model implements it."""
        raise NotImplementedError(f"{type(self).__name__} must implement call(x, training) -> (y, backprop)")

    def forward(self, x, training=False, need_dx=True, **kwargs):
        """``(y, backprop)``; builds the layer on first use. ``backprop(dy)`` accumulates into ``p.grad`` and returns ``dx``
        (or ``None`` with ``need_dx=False``, when the layer :attr:`takes_need_dx`)."""
        x = self._as_input(x)
        if not self.built:
            self.input_shape = shape_of(x)
            self.build([tuple(t.shape) for t in x] if isinstance(x, list) else tuple(x.shape))
            self.built = True
        if self.takes_need_dx:
            kwargs["need_dx"] = need_dx
        with recording.scope(self.name, self):
            result = self.call(x, training, **kwargs)
        y, backprop = _y_and_backprop(self, result)
        if self.output_shape is None:
            self.output_shape = shape_of(y)
        return y, backprop

    def compute_mask(self, x, mask):
        """The mask of this layer's output for the input ``x`` with mask ``mask`` (a list of them for a layer of
        several inputs), or None. The default is Keras's: the mask passes through a layer that
        :attr:`supports_masking`; any other drops it, with Keras's warning (once per layer)."""
        if self.supports_masking:
            return mask
        if not getattr(self, "_warned_mask", False) and any(
                m is not None for m in (mask if isinstance(mask, (list, tuple)) else [mask])):
            self._warned_mask = True
            warnings.warn(f"Layer {self.name!r} (of type {type(self).__name__}) was passed an input with a mask "
                          "attached to it. However, this layer does not support masking and will therefore destroy "
                          "the mask information. Downstream layers will not see the mask.", stacklevel=2)
        return None

    def forward_after(self, previous, x, training=False):
        """``(y, backprop)`` of layer ``previous`` and then this one as one fused op, or ``None``.

        :class:`~scratchnet.Sequential` asks each layer this about the layer
        before it, and runs the pair as one when the answer is not ``None``
        (an ``LSTM`` after an ``Embedding``: :meth:`LSTM.forward_after`).
        ``backprop(dy)`` then accumulates both layers' gradients and returns
        the gradient of ``x``. The default has no fused form.
        """
        return None

    def __call__(self, x, training=False, **kwargs):
        """The output for ``x`` (an array, or a list for a layer of several inputs).

        On :class:`~scratchnet.layers.symbolic.SymbolicTensor` inputs (``sn.Input``) it records the call
        and returns the output's placeholder instead: the Keras functional API (:mod:`scratchnet.model.functional`).
        """
        if is_symbolic(x) or any(is_symbolic(v) for v in kwargs.values()):
            from ..model import functional

            return functional.record_call(self, x, training, kwargs)
        return self.forward(x, training, **kwargs)[0]

    def _as_input(self, x):
        """``x`` as a backend array; float inputs cast to the layer's dtype, host arrays moved to the device.
        A list (the inputs of a layer that takes several) becomes a list of them."""
        if isinstance(x, (list, tuple)):
            return [as_backend_array(t, self.dtype) for t in x]
        return as_backend_array(x, self.dtype)

    # -- parameters --------------------------------------------------------------------
    def parameters(self):
        """Every parameter of this layer and its sublayers, once each, in Keras's weight order."""
        seen = set()
        for p in self._all_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield p

    def _all_parameters(self):
        yield from self._weights
        for layer in self._sublayers():
            yield from layer._all_parameters()

    @property
    def weights(self):
        return list(self.parameters())

    @property
    def trainable_parameters(self):
        return [p for p in self.parameters() if p.trainable]

    def zero_grad(self):
        """Forget the accumulated gradients (``p.grad = None``)."""
        for p in self.parameters():
            p.grad = None

    def count_params(self):
        return sum(math.prod(p.shape) for p in self.parameters())

    def get_weights(self):
        """Host (NumPy) copies of the weights, in Keras's order and layout."""
        return [to_numpy(p.value) for p in self.parameters()]

    def set_weights(self, weights):
        """Load weights in Keras's order and layout (the model must be built)."""
        params = list(self.parameters())
        weights = list(weights)
        if not params and weights:
            raise ValueError(
                f"{self.name}: set_weights on a model that is not built yet; call it on a batch "
                f"or use model.build(input_shape) first"
            )
        if len(weights) != len(params):
            raise ValueError(f"{self.name}: set_weights expects {len(params)} arrays, got {len(weights)}")
        xp = get_backend().xp
        for p, w in zip(params, weights):
            if tuple(numpy.shape(w)) != p.shape:
                raise ValueError(f"{self.name}: weight {p.name!r} has shape {p.shape}, got {tuple(numpy.shape(w))}")
        for p, w in zip(params, weights):
            p.value = xp.array(w, dtype=p.dtype)

    def regularization_loss(self):
        """Sum of the penalties of the regularized parameters (a float)."""
        return float(sum(p.regularizer(p.value) for p in self.parameters() if p.regularizer is not None))

    def regularization_backward(self):
        """Add each penalty's gradient to its parameter's ``.grad``."""
        for p in self.parameters():
            if p.regularizer is None:
                continue
            add_gradient = getattr(p.regularizer, "add_gradient", None)
            if p.grad is not None and add_gradient is not None:
                add_gradient(p.value, p.grad)  # in place, without a temporary (Regularizer.add_gradient)
            else:
                p.accumulate(p.regularizer.gradient(p.value))

    def astype(self, dtype):
        """Convert every parameter of this layer (and its sublayers) to ``dtype``, in place; returns the layer.

        The counterpart of PyTorch's ``layer.to(torch.float64)``: float inputs
        are cast to the new dtype from then on. Accumulated gradients are dropped.
        """
        dtype = float_dtype(f"{self.name}.astype", dtype)
        for p in self.parameters():
            p.value = p.value.astype(dtype)
            p.grad = None
        for layer in self._tree():
            layer.dtype = dtype
        self._dtype_explicit = True
        return self

    def _tree(self):
        yield self
        for layer in self._sublayers():
            yield from layer._tree()

    def _inherit_dtype(self, dtype):
        """Take the dtype of the model this layer was put in (the layer was created without ``dtype=``)."""
        if self.built and any(p.dtype != dtype for p in self._weights):
            raise ValueError(
                f"{type(self).__name__} {self.name!r} is built in {self.dtype.name} and cannot join a {dtype.name} "
                f"model; convert it first with .astype({dtype.name!r})"
            )
        self.dtype = dtype
        for layer in self._parts:
            layer._inherit_dtype(dtype)

    def get_config(self):
        """The constructor's arguments, JSON-ready; :meth:`from_config` rebuilds the layer from them."""
        return {"name": self.name, "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config):
        return cls(**decode_arguments(config))

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}{'' if self.built else ' (not built)'}>"


def _y_and_backprop(layer, result):
    """``call``'s ``(y, backprop)``, or a TypeError saying what it returned instead.

    Unpacking is not enough: an array ``y`` of 2 rows would unpack into its
    rows, and the mistake would surface later, in the next layer.
    """
    if isinstance(result, tuple) and len(result) == 2 and callable(result[1]):
        return result
    if isinstance(result, tuple):
        what = f"a tuple of {len(result)}" if len(result) != 2 else f"(y, {type(result[1]).__name__})"
    elif result is None:
        what = "None (is its `return` missing?)"
    else:
        what = f"{type(result).__name__}{f' of shape {tuple(result.shape)}' if hasattr(result, 'shape') else ''}"
    raise TypeError(f"{type(layer).__name__} {layer.name!r}: call must return (y, backprop), the output and the "
                    f"function that takes dy and returns dx; it returned {what}. End call with `return y, backprop`")


def as_backend_array(x, dtype):
    """``x`` on the current backend; float data cast to ``dtype``, integer data kept as is."""
    be = get_backend()
    xp = be.xp
    if isinstance(x, numpy.ndarray) and xp is not numpy:
        x = xp.asarray(x)
    else:
        x = be.native("forward", "x", x)
    if x.dtype.kind == "f" and x.dtype != dtype:
        x = x.astype(dtype)
    return x


def shape_of(y):
    """Keras's output shape of ``y`` (batch axis ``None``); a list for several outputs."""
    if isinstance(y, (list, tuple)):
        return [shape_of(t) for t in y]
    return (None,) + tuple(y.shape[1:])
