"""``Model`` and ``Sequential``: layers made of layers, with Keras's training API.

A model is a :class:`~scratchnet.Layer` and is extended the same way: a
subclass assigns its layers as attributes in ``__init__`` (they are tracked in
assignment order, which is also the weight order) and implements
``call(x, training) -> (y, backprop)`` by composing their ``forward`` calls::

    model.zero_grad()
    logits, backprop = model.forward(x, training=True)
    loss, dloss = sn.losses.SparseCategoricalCrossentropy()(y, logits)
    backprop(dloss())
    optimizer.step(model.parameters())

``compile`` / ``train_on_batch`` / ``evaluate`` / ``fit`` are Keras's; ``fit``
runs the one training loop of :mod:`scratchnet.training`, and
``train_on_batch`` the one training step (:func:`scratchnet.model.step.train_step`).

Where each concern lives: :mod:`.base` (this class: the tree's interface,
the forward pass, Keras's API), :mod:`.tracking` (the tree's bookkeeping and
the one place a layer's dtype is settled), :mod:`.step` (the training and
test steps), :mod:`.fitting` (``fit``'s argument checks), :mod:`.printing`
(``summary``) and :mod:`.sequential`.
"""
from __future__ import annotations

import math

import numpy

from .. import losses as _losses
from .. import metrics as _metrics
from .. import optimizers as _optimizers
from .. import recording, training
from .._checks import check_bool, check_count
from ..backend import get_backend, to_numpy
from ..layers.base import Layer, shape_of
from ..layers.symbolic import is_symbolic
from . import fitting, printing, step, tracking

_OPTIMIZERS = {"sgd": _optimizers.SGD, "adam": _optimizers.Adam, "rmsprop": _optimizers.RMSProp}


class Model(Layer):
    """A layer made of layers, with Keras's training loop.

    Parameters
    ----------
    name : str, optional
    dtype : {"float32", "float64"}, optional
        The dtype of every layer created without one. Without it the model
        takes the dtype its layers were given, or else :func:`scratchnet.floatx`.

    Attributes
    ----------
    optimizer, loss, metrics : set by :meth:`compile`
    ema : :class:`scratchnet.ExponentialMovingAverage` or None
        When set, ``ema.apply(parameters)`` runs after each optimizer step.
    step : int
        The global step: optimizer steps taken by :meth:`train_on_batch`.
    data_parallel : :class:`scratchnet.distributed.DataParallel` or None
        Set by ``DataParallel(model)``, which then wraps the training step:
        :meth:`train_on_batch` hands it the global batch, and it runs the
        same step (:func:`scratchnet.model.step.train_step`) on this rank's
        rows, averaging the gradients with the other ranks.
    check_finite : bool
        True (the default): :meth:`train_on_batch` refuses a step whose loss
        or gradients hold a NaN or an infinity, raising
        :class:`scratchnet.training.NonFiniteError` before the update.
        ``fit(check_finite=False)`` turns it off for one run.
    """

    _names_weights = False

    def __new__(cls, *args, **kwargs):
        # sn.Model(inputs, outputs) is Keras's functional model (scratchnet/model/functional.py).
        if cls is Model and (args and is_symbolic(args[0]) or "inputs" in kwargs or "outputs" in kwargs):
            from .functional import Functional

            return object.__new__(Functional)
        return object.__new__(cls)

    def __init__(self, name=None, dtype=None):
        super().__init__(name, dtype)
        self._layers = []
        self.optimizer = None
        self.loss = None
        self.metrics = []
        self.ema = None
        self.step = 0
        self.stop_training = False
        self.data_parallel = None
        self.check_finite = True

    def __setattr__(self, key, value):
        if isinstance(value, Layer) and not key.startswith("_"):
            if "_layers" not in self.__dict__:
                raise ValueError(f"{type(self).__name__}: call super().__init__() before assigning layers")
            self._track(value)
        object.__setattr__(self, key, value)

    # -- the tree (scratchnet/model/tracking.py) ----------------------------------------
    def _track(self, layer):
        tracking.track(self, layer)

    def _inherit_dtype(self, dtype):
        tracking.settle_dtypes(self, inherited=dtype)

    def _sublayers(self):
        return list(self._layers)

    @property
    def layers(self):
        return list(self._layers)

    def get_layer(self, name):
        """The layer called ``name`` (Keras's ``get_layer``); a ValueError naming the layers there are otherwise."""
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"{self.name}: no layer named {name!r}; its layers: {[layer.name for layer in self._layers]}")

    def walk(self):
        """Every layer of the tree below this model, depth first."""
        for layer in self._layers:
            yield layer
            if isinstance(layer, Model):
                yield from layer.walk()

    def reset_states(self):
        """Forget the carried state of every stateful layer."""
        for layer in self.walk():
            if hasattr(layer, "reset_states") and not isinstance(layer, Model):
                layer.reset_states()

    def astype(self, dtype):
        """Convert every parameter, the optimizer's slots and the moving averages to ``dtype``, in place.

        The counterpart of PyTorch's ``model.to(torch.float64)``; accumulated
        gradients are dropped. Returns the model.
        """
        super().astype(dtype)
        for holder in (self.optimizer, self.ema):
            if holder is not None:
                holder.astype(self.dtype)
        return self

    # -- the forward pass --------------------------------------------------------------
    def forward(self, x, training=False, need_dx=True, **kwargs):
        """``(y, backprop)``: :meth:`call`; the layers build themselves on their first call.

        ``need_dx=False`` (:attr:`~scratchnet.Layer.takes_need_dx`): nobody wants the input's gradient.
        """
        if not self.built:
            self.input_shape = (None,) + tuple(numpy.shape(x)[1:])
        if self.takes_need_dx:
            kwargs["need_dx"] = need_dx
        with recording.scope(self.name, self):
            y, backprop = self.call(x, training, **kwargs)
        self.built = True
        if self.output_shape is None:
            self.output_shape = shape_of(y)
        return y, backprop

    def build(self, input_shape, dtype=None):
        """Build every layer by running a batch of one zero example of ``input_shape`` through the model.

        ``input_shape`` may start with ``None`` (the batch axis); ``dtype`` is the
        input's (``int32`` for a model whose first layer takes ids, the
        model's float dtype otherwise).
        """
        shape = tuple(input_shape)
        shape = (1,) + tuple(shape[1:]) if shape and shape[0] is None else shape
        if dtype is None:
            first = self._layers[0] if self._layers else None
            dtype = numpy.int32 if first is not None and first.takes_ids else self.dtype
        self.forward(get_backend().xp.zeros(shape, dtype=dtype), training=False)
        self.reset_states()
        self.built = True
        self.input_shape = (None,) + tuple(shape[1:])

    # -- Keras's training API ----------------------------------------------------------
    def compile(self, optimizer="sgd", loss=None, metrics=("accuracy",)):
        """Set the optimizer (an instance or ``"sgd"``, ``"adam"``, ``"rmsprop"``), the loss and the metrics."""
        if isinstance(optimizer, str):
            if optimizer.lower() not in _OPTIMIZERS:
                raise ValueError(f"compile: unknown optimizer {optimizer!r}; choose one of {sorted(_OPTIMIZERS)} or pass an instance")
            optimizer = _OPTIMIZERS[optimizer.lower()]()
        if not hasattr(optimizer, "step"):
            raise ValueError(f"compile: optimizer must have a step(params) method, got {optimizer!r}")
        if loss is None:
            raise ValueError("compile: loss is required (e.g. sn.losses.SparseCategoricalCrossentropy())")
        loss = _losses.get(loss)
        if getattr(loss, "reduction", None) == "none":
            raise ValueError(f"compile: the loss {type(loss).__name__} has reduction='none', which returns one loss per "
                             "example; training needs one number per step: use reduction='mean' or 'sum' (call the "
                             "loss yourself for per-example values)")
        self.optimizer = optimizer
        self.loss = loss
        self.metrics = [_metrics.get(m) for m in (metrics or ())]

    def require_compiled(self, what, optimizer=False):
        """Raise ValueError unless :meth:`compile` set the loss (and, with ``optimizer``, an optimizer)."""
        if self.loss is None:
            raise ValueError(f"{self.name}: call compile(optimizer, loss) before {what}")
        if optimizer and self.optimizer is None:
            raise ValueError(f"{self.name}: compile with an optimizer before {what}")

    def train_on_batch(self, x, y):
        """One step: forward, loss, backprop, regularization, ``optimizer.step``, EMA (:func:`.step.train_step`).

        Returns ``{"loss": ..., <metric>: ...}`` for this batch, measured
        before the update; the loss includes the regularization penalty, as
        Keras reports it. With :attr:`check_finite` a step holding a NaN or an
        infinity raises :class:`scratchnet.training.NonFiniteError` and
        changes nothing. Under :class:`scratchnet.distributed.DataParallel`
        (``self.data_parallel``) ``(x, y)`` is the global batch: the wrapper
        runs the same step on this rank's rows and returns the global batch's logs.
        """
        if self.data_parallel is not None:
            return self.data_parallel.train_on_batch(x, y)
        return step.train_step(self, x, y)

    def test_on_batch(self, x, y):
        """Loss and metrics of one batch in inference mode (no update)."""
        return step.test_step(self, x, y)

    def predict(self, x, batch_size=32):
        """Inference-mode outputs for ``x`` (an array, or a list for a model of several inputs), batch by batch,
        as one host (NumPy) array (a list of them for a model of several outputs)."""
        batch_size = check_count("predict", "batch_size", batch_size)
        n = training.num_examples(x)
        outs = []
        for start in range(0, n, batch_size):
            rows = step.inputs_as_arrays(training.take(x, slice(start, start + batch_size)), self.dtype)
            y, _ = self.forward(rows, training=False)
            outs.append([to_numpy(t) for t in y] if isinstance(y, list) else to_numpy(y))
        if outs and isinstance(outs[0], list):  # a model of several outputs: one array each
            return [numpy.concatenate(parts) for parts in zip(*outs)]
        return numpy.concatenate(outs) if outs else numpy.zeros((0,), dtype=self.dtype)

    def evaluate(self, x, y, batch_size=32, callbacks=None, verbose=0):
        """``{"loss": ..., <metric>: ...}`` averaged over all of ``x`` (weighted by batch size)."""
        self.require_compiled("evaluate")
        training.num_examples(x, y, "evaluate")
        batch_size = check_count("evaluate", "batch_size", batch_size)
        fitting.check_verbose("evaluate", verbose)
        batches = training.array_batches(x, y, batch_size, shuffle=False, epochs=1)
        return training.evaluate(self, ((xb, yb) for _, xb, yb in batches), callbacks)

    def fit(self, x, y, batch_size=32, epochs=1, validation_data=None, callbacks=None, verbose=1, shuffle=True,
            validation_split=0.0, steps_per_epoch=None, check_finite=True):
        """Train for ``epochs`` passes over ``(x, y)``, driving Keras's callback protocol.

        Batch logs hold the running mean of the epoch so far (as Keras 3);
        epoch logs hold the epoch's means, plus ``val_<name>`` for
        ``validation_data=(x_val, y_val)``, or for the last
        ``validation_split`` of ``(x, y)``, held out before shuffling (as
        Keras does). ``steps_per_epoch`` makes an epoch that many batches
        (the data cycles on across epochs) instead of one pass. When
        ``verbose`` and no :class:`scratchnet.callbacks.ProgressBar` is given,
        one is added (on rank 0 only, under data parallelism). A callback can
        set ``model.stop_training = True``. After
        ``sn.distributed.DataParallel(model)``, run the same ``fit`` on every
        rank (``mpiexec -n R python script.py``): ``batch_size`` is the global
        batch, and each rank trains on its share of it.

        A step whose loss or gradients hold a NaN or an infinity is not
        applied: training stops with :class:`scratchnet.training.NonFiniteError`,
        after the callbacks' ``on_train_end``. ``check_finite=False`` trains
        on regardless. Every argument is checked before the first step: a bad
        one is a ``ValueError`` naming it.

        Returns
        -------
        History
            ``history.history["loss"]`` etc., one entry per epoch.
        """
        from .. import callbacks as _callbacks

        self.require_compiled("fit")
        n = training.num_examples(x, y, "fit")
        batch_size = check_count("fit", "batch_size", batch_size)
        epochs = check_count("fit", "epochs", epochs)
        steps_per_epoch = check_count("fit", "steps_per_epoch", steps_per_epoch, none=True)
        verbose = fitting.check_verbose("fit", verbose)
        check_bool("fit", "shuffle", shuffle)
        check_bool("fit", "check_finite", check_finite)
        if n == 0:
            raise ValueError(f"{self.name}: fit needs at least one example")
        x, y, validation_data = fitting.hold_out(x, y, validation_split, validation_data)
        if validation_data is not None:
            x_val, y_val = fitting.check_validation_data(validation_data, x, y)
        callbacks = list(callbacks or [])
        root = self.data_parallel is None or self.data_parallel.is_root  # one progress bar for all the ranks
        if verbose and root and not any(isinstance(c, _callbacks.ProgressBar) for c in callbacks):
            callbacks.append(_callbacks.ProgressBar())
        batches = training.array_batches(x, y, batch_size, shuffle=shuffle)
        if steps_per_epoch is None:
            steps_per_epoch = math.ceil(training.num_examples(x) / batch_size)
        else:
            batches = fitting.epochs_of(batches, steps_per_epoch)
        validate = None
        if validation_data is not None:

            def validate():
                return self.evaluate(x_val, y_val, batch_size=batch_size, callbacks=callbacks)

        return training.train(
            self, batches, epochs * steps_per_epoch, callbacks,
            params={"epochs": epochs, "steps": steps_per_epoch, "batch_size": batch_size, "verbose": verbose},
            validate=validate, check_finite=check_finite,
        )

    def summary(self, print_fn=print):
        """Print a table of layers, output shapes and parameter counts (Keras's format); returns its text."""
        return printing.summary(self, print_fn)
