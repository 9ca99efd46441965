"""Parameters, layers and models: what holds the weights and runs the ops.

A layer's ``forward(x, training)`` returns ``(y, backprop)``, as the ops do;
``backprop(dy)`` ADDS each parameter's gradient to ``p.grad`` and returns
``dx``. Accumulating makes sharing correct by construction: a layer called
twice, or a parameter used by two models, receives the sum of the gradients of
every use. ``model.zero_grad()`` clears them before the next step::

    model.zero_grad()
    logits, backprop = model.forward(x, training=True)
    loss, dloss = sn.losses.SparseCategoricalCrossentropy()(y, logits)
    backprop(dloss())
    optimizer.step(model.parameters())

Parameters are named hierarchically (``dense/kernel``, ``layer1/weights``) and
live in a :class:`ParameterStore`. Each outermost model has a private store,
unless it is created inside ``store.scope(name, reuse=...)``, TensorFlow 1's
``variable_scope`` / ``get_variable`` rules then apply: creating a name that
is taken is an error unless ``reuse=True``, and reusing a name that does not
exist is an error too. That is how a training model and a sampling model (batch
1, one step) share one set of weights::

    store = sn.ParameterStore()
    with store.scope("charlm"):
        train_model = CharLM(batch_size=32)
    with store.scope("charlm", reuse=True):
        sample_model = CharLM(batch_size=1)
"""
from __future__ import annotations

import contextlib
import math
import re
import threading

import numpy

from .backend import get_backend, to_numpy


class Parameter:
    """A named weight: its value, its accumulated gradient and how it is trained.

    Attributes
    ----------
    name : str
        Hierarchical name, unique in its store (``"dense/kernel"``).
    value : backend array
        May be reassigned (``set_weights`` does); optimizers update it in place.
    grad : backend array or None
        Sum of the gradients of every use since the last ``zero_grad``.
    trainable : bool
    regularizer : callable or None
        ``regularizer(value) -> float`` with a ``.gradient(value)`` method.
    """

    def __init__(self, name, value, trainable=True, regularizer=None):
        self.name = name
        self.value = value
        self.grad = None
        self.trainable = bool(trainable)
        self.regularizer = regularizer

    @property
    def shape(self):
        return tuple(self.value.shape)

    @property
    def dtype(self):
        return self.value.dtype

    def accumulate(self, g):
        """``grad += g``; the first gradient is copied, so ``g`` is never aliased or modified.

        A frozen (``trainable=False``) parameter collects nothing.
        """
        if not self.trainable:
            return
        if tuple(g.shape) != self.shape:
            raise ValueError(f"Parameter {self.name!r}: gradient has shape {tuple(g.shape)}, the value has {self.shape}")
        if self.grad is None:
            self.grad = g.astype(self.value.dtype, copy=True)
        else:
            self.grad += g

    def __repr__(self):
        return f"<Parameter {self.name!r} shape={self.shape} dtype={self.dtype}{'' if self.trainable else ' frozen'}>"


class ParameterStore:
    """Parameters by name, with ``get_variable`` / ``variable_scope`` rules.

    Layers created inside ``with store.scope(name, reuse=...)`` take their
    parameters from this store, under ``name/``. The scope in force when the
    OUTERMOST model (or a lone layer) is created is the one its whole tree
    uses, since weights are created lazily at the first call, after the
    ``with`` block has ended.

    ``reuse``: ``False`` (create; a taken name is an error), ``True`` (share;
    a missing name or a different shape is an error) or ``"auto"`` (share when
    present, create otherwise, TF's ``AUTO_REUSE``). Nested scopes join their
    names, and reuse is inherited once set, as in TensorFlow.
    """

    def __init__(self):
        self._params = {}

    def scope(self, name, reuse=None):
        """Context manager: layers created inside take their weights from here, under ``name/``."""
        if not isinstance(name, str) or not _NAME.fullmatch(name.strip("/")):
            raise ValueError(f"ParameterStore.scope: name must be a non-empty string of names joined by '/', got {name!r}")
        if reuse not in (None, False, True, "auto"):
            raise ValueError(f"ParameterStore.scope: reuse must be False, True or 'auto', got {reuse!r}")
        return _scope_context(self, name.strip("/"), reuse)

    def get(self, name, shape, dtype, initializer, reuse=False, trainable=True, regularizer=None):
        """The parameter ``name``, created with ``initializer(shape, dtype)`` or reused (see the class doc)."""
        shape = tuple(int(s) for s in shape)
        existing = self._params.get(name)
        if existing is not None:
            if not reuse:
                raise ValueError(
                    f"parameter {name!r} already exists; create the model inside "
                    f"store.scope(..., reuse=True) to share it, or give the layer another name"
                )
            if existing.shape != shape:
                raise ValueError(f"parameter {name!r} is reused with shape {shape} but exists with shape {existing.shape}")
            return existing
        if reuse is True:
            near = sorted(self._params)[:8]
            raise ValueError(
                f"parameter {name!r} does not exist, so it cannot be reused (reuse=True); "
                f"the store holds {len(self._params)} parameters, e.g. {near}"
            )
        value = get_backend().xp.asarray(initializer(shape, dtype))
        p = Parameter(name, value, trainable=trainable, regularizer=regularizer)
        self._params[name] = p
        return p

    def __contains__(self, name):
        return name in self._params

    def __getitem__(self, name):
        return self._params[name]

    def __iter__(self):
        return iter(self._params.values())

    def __len__(self):
        return len(self._params)

    def __repr__(self):
        return f"<ParameterStore with {len(self._params)} parameters>"


_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_scopes = threading.local()


class _Scope:
    def __init__(self, store, prefix, reuse):
        self.store, self.prefix, self.reuse = store, prefix, reuse


@contextlib.contextmanager
def _scope_context(store, name, reuse):
    stack = _scope_stack()
    outer = stack[-1] if stack and stack[-1].store is store else None
    prefix = (outer.prefix if outer else "") + name + "/"
    # Reuse is inherited: inside a reusing scope everything reuses (TensorFlow's rule).
    inherited = outer.reuse if outer else False
    effective = reuse if reuse is not None and not (inherited is True) else (inherited or False)
    stack.append(_Scope(store, prefix, effective))
    try:
        yield store
    finally:
        stack.pop()


def _scope_stack():
    if not hasattr(_scopes, "stack"):
        _scopes.stack = []
    return _scopes.stack


def _current_scope():
    stack = _scope_stack()
    return stack[-1] if stack else None


def _snake(name):
    """Keras's default layer names: ``Conv2D`` -> ``conv2d``, ``MaxPool2D`` -> ``max_pool2d``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Layer:
    """Base class: a named holder of parameters with ``forward(x, training) -> (y, backprop)``.

    Subclasses implement ``build(input_shape)`` (create weights with
    :meth:`add_weight`) and ``call(x, training) -> (y, backprop)``; the first
    :meth:`forward` builds the layer from the input's shape.

    Parameters
    ----------
    name : str, optional
        Defaults to the class name in snake case (``"dense"``); a model makes
        default names unique among its layers (``"dense_1"``).
    dtype : {"float32", "float64"}, optional
        Dtype of the weights; float inputs are cast to it (as Keras does).
    """

    def __init__(self, name=None, dtype="float32"):
        if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name) or "/" in name):
            raise ValueError(f"{type(self).__name__}: name must be a non-empty string without '/', got {name!r}")
        if numpy.dtype(dtype) not in (numpy.float32, numpy.float64):
            raise ValueError(f"{type(self).__name__}: dtype must be float32 or float64, got {dtype!r}")
        self._auto_named = name is None
        self.name = name if name is not None else _snake(type(self).__name__)
        self.dtype = numpy.dtype(dtype)
        self._scope = _current_scope()
        self._parent = None
        self._own_store = None
        self._weights = []
        self.built = False
        self.input_shape = None
        self.output_shape = None

    # -- the tree ----------------------------------------------------------------------
    def _sublayers(self):
        return []

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
        # An outermost model's name is not part of its weights' names (as in TF 1's
        # get_variable); a lone layer's is.
        return scope if isinstance(self, Model) else scope + self.name + "/"

    def _store(self):
        root = self._root()
        if root._scope is not None:
            return root._scope.store, root._scope.reuse
        if root._own_store is None:
            root._own_store = ParameterStore()
        return root._own_store, False

    def add_weight(self, name, shape, initializer="zeros", trainable=True, regularizer=None, dtype=None):
        """Create (or, under a reusing scope, fetch) the parameter ``<prefix>/<name>``."""
        from . import initializers, regularizers

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
        raise NotImplementedError(f"{type(self).__name__} must implement call(x, training)")

    def forward(self, x, training=False, **kwargs):
        """``(y, backprop)``; builds the layer on first use. ``backprop(dy)`` accumulates into ``p.grad`` and returns ``dx``."""
        x = self._as_input(x)
        if not self.built:
            self.build(tuple(x.shape))
            self.built = True
            self.input_shape = (None,) + tuple(x.shape[1:])
        y, backprop = self.call(x, training, **kwargs)
        if self.output_shape is None:
            self.output_shape = _shape_of(y)
        return y, backprop

    def __call__(self, x, training=False, **kwargs):
        return self.forward(x, training, **kwargs)[0]

    def _as_input(self, x):
        """``x`` as a backend array; float inputs cast to the layer's dtype, host arrays moved to the device."""
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
            if p.regularizer is not None:
                p.accumulate(p.regularizer.gradient(p.value))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name}

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}{'' if self.built else ' (not built)'}>"


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


def _shape_of(y):
    if isinstance(y, (list, tuple)):
        return [_shape_of(t) for t in y]
    return (None,) + tuple(y.shape[1:])


class History:
    """What :meth:`Model.fit` returns: ``history[key]`` is a list with one entry per epoch."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.params = {}

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"<History {sorted(self.history)} over {len(self.epoch)} epochs>"


class Model(Layer):
    """A layer made of layers, with Keras's training loop.

    Subclass it for models a stack cannot express (a language model that
    carries its LSTM state between batches): assign layers as attributes in
    ``__init__`` (they are tracked, in assignment order, which is also the
    weight order) and implement ``forward(x, training=False) -> (y, backprop)``
    by composing their ``forward`` calls.

    Attributes
    ----------
    optimizer, loss, metrics : set by :meth:`compile`
    ema : :class:`scratchnet.ExponentialMovingAverage` or None
        When set, ``ema.apply(parameters)`` runs after each optimizer step.
    step : int
        The global step: optimizer steps taken by :meth:`train_on_batch`.
    """

    def __init__(self, name=None, dtype="float32"):
        super().__init__(name, dtype)
        self._layers = []
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.ema = None
        self.step = 0
        self.stop_training = False

    def __setattr__(self, key, value):
        if isinstance(value, Layer) and not key.startswith("_"):
            if "_layers" not in self.__dict__:
                raise ValueError(f"{type(self).__name__}: call super().__init__() before assigning layers")
            self._track(value)
        object.__setattr__(self, key, value)

    def _track(self, layer):
        if layer is self:
            raise ValueError(f"{self.name}: a model cannot contain itself")
        if any(layer is other for other in self._layers):
            return
        taken = {other.name for other in self._layers}
        if layer._parent is None:
            if layer.name in taken:
                if not layer._auto_named:
                    raise ValueError(
                        f"{self.name}: two layers are named {layer.name!r}; layer names must be unique in a model"
                    )
                base, i = layer.name, 1
                while f"{base}_{i}" in taken:
                    i += 1
                layer.name = f"{base}_{i}"
            layer._parent = self
        self._layers.append(layer)

    def _sublayers(self):
        return list(self._layers)

    @property
    def layers(self):
        return list(self._layers)

    def forward(self, x, training=False):
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, training) -> (y, backprop)")

    def _as_input(self, x):
        return x

    def build(self, input_shape, dtype=None):
        """Build every layer by running a batch of one zero example of ``input_shape`` through the model.

        ``input_shape`` may start with ``None`` (the batch axis); ``dtype`` is the
        input's (``int32`` for a model that starts with an Embedding, the
        model's float dtype otherwise).
        """
        shape = tuple(input_shape)
        shape = (1,) + tuple(shape[1:]) if shape and shape[0] is None else shape
        if dtype is None:
            dtype = numpy.int32 if self._first_layer_takes_ids() else self.dtype
        xp = get_backend().xp
        self.forward(xp.zeros(shape, dtype=dtype), training=False)
        self._reset_states_after_build()
        self.built = True
        self.input_shape = (None,) + tuple(shape[1:])

    def _first_layer_takes_ids(self):
        return False

    def _reset_states_after_build(self):
        for layer in self._walk():
            if hasattr(layer, "reset_states"):
                layer.reset_states()

    def _walk(self):
        for layer in self._layers:
            yield layer
            if isinstance(layer, Model):
                yield from layer._walk()

    def reset_states(self):
        """Forget the carried state of every stateful layer."""
        for layer in self._walk():
            if hasattr(layer, "reset_states") and not isinstance(layer, Model):
                layer.reset_states()

    # -- Keras's training API ----------------------------------------------------------
    def compile(self, optimizer="sgd", loss=None, metrics=("accuracy",)):
        """Set the optimizer (an instance or ``"sgd"``, ``"adam"``, ``"rmsprop"``), the loss and the metrics."""
        from . import losses as _losses
        from . import metrics as _metrics

        if isinstance(optimizer, str):
            from . import optimizers

            classes = {"sgd": optimizers.SGD, "adam": optimizers.Adam, "rmsprop": optimizers.RMSProp}
            if optimizer.lower() not in classes:
                raise ValueError(f"compile: unknown optimizer {optimizer!r}; choose one of {sorted(classes)} or pass an instance")
            optimizer = classes[optimizer.lower()]()
        if not hasattr(optimizer, "step"):
            raise ValueError(f"compile: optimizer must have a step(params) method, got {optimizer!r}")
        if loss is None:
            raise ValueError("compile: loss is required (e.g. sn.losses.SparseCategoricalCrossentropy())")
        self.optimizer = optimizer
        self.loss = _losses.get(loss)
        self.metrics = [_metrics.get(m) for m in (metrics or ())]

    def _require_compiled(self, what):
        if self.loss is None:
            raise ValueError(f"{self.name}: call compile(optimizer, loss) before {what}")

    def _compute_logs(self, y, y_pred, loss_value):
        logs = {"loss": loss_value}
        for name, fn in self.metrics:
            logs[name] = float(fn(y, y_pred))
        return logs

    def train_on_batch(self, x, y):
        """One step: forward, loss, backprop, regularization, ``optimizer.step``, EMA.

        Returns ``{"loss": ..., <metric>: ...}`` for this batch, measured
        before the update; the loss includes the regularization penalty, as
        Keras reports it.
        """
        self._require_compiled("train_on_batch")
        if self.optimizer is None:
            raise ValueError(f"{self.name}: compile with an optimizer before train_on_batch")
        y = as_backend_array(y, self.dtype)
        self.zero_grad()
        y_pred, backprop = self.forward(as_backend_array(x, self.dtype), training=True)
        value, loss_backprop = self.loss(y, y_pred)
        backprop(loss_backprop(1.0))
        penalty = self.regularization_loss()
        self.regularization_backward()
        params = self.trainable_parameters
        self.optimizer.step(params)
        if self.ema is not None:
            self.ema.apply(params)
        self.step += 1
        return self._compute_logs(y, y_pred, float(value) + penalty)

    def test_on_batch(self, x, y):
        """Loss and metrics of one batch in inference mode (no update)."""
        self._require_compiled("test_on_batch")
        y = as_backend_array(y, self.dtype)
        y_pred, _ = self.forward(as_backend_array(x, self.dtype), training=False)
        value, _ = self.loss(y, y_pred)
        return self._compute_logs(y, y_pred, float(value) + self.regularization_loss())

    def predict(self, x, batch_size=32):
        """Inference-mode outputs for ``x``, batch by batch, as one host (NumPy) array."""
        n = _num_examples(x)
        outs = []
        for start in range(0, n, batch_size):
            y, _ = self.forward(as_backend_array(x[start : start + batch_size], self.dtype), training=False)
            outs.append(to_numpy(y))
        return numpy.concatenate(outs) if outs else numpy.zeros((0,))

    def evaluate(self, x, y, batch_size=32, callbacks=None, verbose=0):
        """``{"loss": ..., <metric>: ...}`` averaged over all of ``x`` (weighted by batch size)."""
        self._require_compiled("evaluate")
        callbacks = list(callbacks or [])
        n = _num_examples(x, y)
        if n == 0:
            raise ValueError(f"{self.name}: evaluate needs at least one example")
        _dispatch(callbacks, "on_test_begin", {})
        totals = {}
        for start in range(0, n, batch_size):
            logs = self.test_on_batch(x[start : start + batch_size], y[start : start + batch_size])
            k = min(batch_size, n - start)
            for key, v in logs.items():
                totals[key] = totals.get(key, 0.0) + v * k
        result = {key: v / n for key, v in totals.items()}
        _dispatch(callbacks, "on_test_end", dict(result))
        return result

    def fit(self, x, y, batch_size=32, epochs=1, validation_data=None, callbacks=None, verbose=1, shuffle=True):
        """Train for ``epochs`` passes over ``(x, y)``, driving Keras's callback protocol.

        Batch logs hold the running mean of the epoch so far (as Keras 3);
        epoch logs hold the epoch's means, plus ``val_<name>`` for
        ``validation_data=(x_val, y_val)``. When ``verbose`` and no
        :class:`scratchnet.callbacks.ProgressBar` is given, one is added.
        A callback can set ``model.stop_training = True``.

        Returns
        -------
        History
            ``history.history["loss"]`` etc., one entry per epoch.
        """
        from . import callbacks as _callbacks
        from . import random as _random

        self._require_compiled("fit")
        n = _num_examples(x, y)
        if n == 0:
            raise ValueError(f"{self.name}: fit needs at least one example")
        callbacks = list(callbacks or [])
        if verbose and not any(isinstance(c, _callbacks.ProgressBar) for c in callbacks):
            callbacks.append(_callbacks.ProgressBar())
        steps = math.ceil(n / batch_size)
        history = History()
        history.params = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "verbose": verbose}
        for c in callbacks:
            if hasattr(c, "set_params"):
                c.set_params(dict(history.params))
            c.set_model(self)
        self.history = history
        self.stop_training = False
        _dispatch(callbacks, "on_train_begin", {})
        for epoch in range(epochs):
            _dispatch(callbacks, "on_epoch_begin", epoch, {})
            order = _random.generator().permutation(n) if shuffle else numpy.arange(n)
            totals, seen = {}, 0
            for b in range(steps):
                idx = order[b * batch_size : (b + 1) * batch_size]
                _dispatch(callbacks, "on_train_batch_begin", b, {})
                logs = self.train_on_batch(_take(x, idx), _take(y, idx))
                seen += len(idx)
                for key, v in logs.items():
                    totals[key] = totals.get(key, 0.0) + v * len(idx)
                _dispatch(callbacks, "on_train_batch_end", b, {key: v / seen for key, v in totals.items()})
                if self.stop_training:
                    break
            epoch_logs = {key: v / seen for key, v in totals.items()}
            if validation_data is not None:
                x_val, y_val = validation_data
                val = self.evaluate(x_val, y_val, batch_size=batch_size, callbacks=callbacks)
                epoch_logs.update({f"val_{key}": v for key, v in val.items()})
            _dispatch(callbacks, "on_epoch_end", epoch, epoch_logs)
            history.append(epoch, epoch_logs)
            if self.stop_training:
                break
        _dispatch(callbacks, "on_train_end", dict(_last_logs(history)))
        return history

    def summary(self, print_fn=print):
        """Print a table of layers, output shapes and parameter counts (Keras's format)."""
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = "?" if layer.output_shape is None else _format_shape(layer.output_shape)
            built = layer.built or (isinstance(layer, Model) and any(True for _ in layer.parameters()))
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, str(layer.count_params()) if built else "0 (unbuilt)"))
        widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]
        line = "=" * sum(widths)
        lines = [f'Model: "{self.name}"', "_" * sum(widths), "".join(c.ljust(w) for c, w in zip(rows[0], widths)), line]
        for r in rows[1:]:
            lines.append("".join(c.ljust(w) for c, w in zip(r, widths)))
        params = list(self.parameters())
        trainable = sum(math.prod(p.shape) for p in params if p.trainable)
        total = sum(math.prod(p.shape) for p in params)
        lines += [line, f"Total params: {total}", f"Trainable params: {trainable}", f"Non-trainable params: {total - trainable}"]
        text = "\n".join(lines)
        print_fn(text)
        return text


def _last_logs(history):
    return {k: v[-1] for k, v in history.history.items()}


def _dispatch(callbacks, hook, *args):
    for c in callbacks:
        method = getattr(c, hook, None)
        if method is not None:
            method(*args)


def _num_examples(x, y=None):
    n = len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"x and y must have the same number of examples, got {n} and {len(y)}")
    return n


def _take(a, idx):
    # Host data is indexed on the host; a device array with a device index.
    if isinstance(a, numpy.ndarray):
        return a[idx]
    return a[get_backend().xp.asarray(idx)]


def _format_shape(shape):
    if isinstance(shape, list):
        return ", ".join(_format_shape(s) for s in shape)
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


class Sequential(Model):
    """A stack of layers, each feeding the next.

    Parameters
    ----------
    layers : list of Layer
        A layer object may appear more than once (its weights are shared and
        receive the sum of the gradients).
    name : str, optional
    """

    def __init__(self, layers=None, name=None, dtype="float32"):
        super().__init__(name, dtype)
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise ValueError(f"{self.name}: Sequential takes layers, got {type(layer).__name__}")
        if any(layer is other for other in self._layers):
            # The same object again: a second use of the same weights.
            self._stack.append(layer)
            return
        self._track(layer)
        self._stack.append(layer)

    @property
    def _stack(self):
        if "_stack_list" not in self.__dict__:
            object.__setattr__(self, "_stack_list", [])
        return self.__dict__["_stack_list"]

    @property
    def layers(self):
        return list(self._stack)

    def _first_layer_takes_ids(self):
        from .layers import Embedding

        return bool(self._stack) and isinstance(self._stack[0], Embedding)

    def forward(self, x, training=False):
        """Run the stack; ``backprop(dy)`` runs the layers' backprops in reverse and returns ``dx``."""
        if not self._stack:
            raise ValueError(f"{self.name}: the model has no layers")
        if not self.built:
            self.input_shape = (None,) + tuple(numpy.shape(x)[1:])
        backprops = []
        for layer in self._stack:
            x, backprop = layer.forward(x, training)
            backprops.append(backprop)
        self.built = True
        if self.output_shape is None:
            self.output_shape = _shape_of(x)

        def backprop(dY):
            for bp in reversed(backprops):
                dY = bp(dY)
            return dY

        return x, backprop

    def get_config(self):
        from .layers import serialize

        return {"name": self.name, "dtype": self.dtype.name, "layers": [serialize(layer) for layer in self._stack]}

    @classmethod
    def from_config(cls, config):
        from .layers import deserialize

        return cls([deserialize(c) for c in config["layers"]], name=config.get("name"), dtype=config.get("dtype", "float32"))
