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
runs the one training loop of :mod:`scratchnet.training`.
"""
from __future__ import annotations

import math
import numbers

import numpy

from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from . import regularizers as _regularizers
from . import fused_update, recording, training
from ._checks import check_bool, check_count, deferred_checks
from .backend import get_backend, to_numpy
from .layers.base import Layer, as_backend_array, shape_of
from .serialization import deserialize, register, serialize

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
        Set by ``DataParallel(model)``: the model then trains on its rank's
        rows of each batch and averages its gradients with the other ranks.
    check_finite : bool
        True (the default): :meth:`train_on_batch` refuses a step whose loss
        or gradients hold a NaN or an infinity, raising
        :class:`scratchnet.training.NonFiniteError` before the update.
        ``fit(check_finite=False)`` turns it off for one run.
    """

    _names_weights = False

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

    # -- the tree ----------------------------------------------------------------------
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
        self._reconcile_dtypes()

    def _reconcile_dtypes(self):
        """One dtype for the whole model: the model's own, or the one its layers were given."""
        explicit = [layer for layer in self._layers if layer._dtype_explicit]
        if self._dtype_explicit:
            for layer in explicit:
                if layer.dtype != self.dtype:
                    raise ValueError(
                        f"{self.name}: layer {layer.name!r} was given dtype {layer.dtype.name} but the model "
                        f"{type(self).__name__} {self.name!r} has dtype {self.dtype.name}; make them agree, or drop one"
                    )
        elif explicit:
            kinds = {layer.dtype for layer in explicit}
            if len(kinds) > 1:
                named = ", ".join(f"{layer.name!r}: {layer.dtype.name}" for layer in explicit)
                raise ValueError(f"{self.name}: its layers were given different dtypes ({named}); use one dtype")
            self.dtype = kinds.pop()
        for layer in self._layers:
            if not layer._dtype_explicit:
                layer._inherit_dtype(self.dtype)

    def _inherit_dtype(self, dtype):
        self.dtype = dtype
        self._reconcile_dtypes()

    def _sublayers(self):
        return list(self._layers)

    @property
    def layers(self):
        return list(self._layers)

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
        Keras reports it. Under :class:`scratchnet.distributed.DataParallel`
        (``self.data_parallel``) ``(x, y)`` is the global batch: this rank
        steps on its rows and the logs are the global batch's.
        """
        if self.data_parallel is not None:
            return self.data_parallel.train_on_batch(x, y)
        return self.train_on_shard(x, y)

    def train_on_shard(self, x, y):
        """:meth:`train_on_batch` on this process's rows; the gradients are averaged over the ranks before the optimizer.

        With :attr:`check_finite`, the loss and the gradients are checked
        after the backward pass and before anything is updated
        (:func:`scratchnet.training.check_step`): a step holding a NaN or an
        infinity raises :class:`scratchnet.training.NonFiniteError` and leaves
        the weights, the optimizer, the moving average and ``step`` as they were.
        """
        self._require_compiled("train_on_batch")
        if self.optimizer is None:
            raise ValueError(f"{self.name}: compile with an optimizer before train_on_batch")
        x, y = as_backend_array(x, self.dtype), as_backend_array(y, self.dtype)
        if self.data_parallel is None and get_backend().xp is not numpy:
            return self._train_on_device(x, y)
        self.zero_grad()
        # The input is data: no layer computes its gradient (the first layer skips its dx).
        y_pred, backprop = self.forward(x, training=True, need_dx=False)
        value, loss_backprop = self.loss(y, y_pred)
        loss = float(value)
        backprop(loss_backprop(1.0))
        params = self.trainable_parameters
        check = (lambda: training.check_step(self, loss, params, x, y)) if self.check_finite else None
        if fused_update.fusable(self, params):  # plain SGD, L2 and a moving average: one pass per parameter
            if check is not None:
                with recording.region("check_finite"):
                    check()
            penalty = fused_update.sgd_l2_ema_step(self, params)
        else:
            penalty = self._update(params, check, loss)
        self.step += 1
        return self._compute_logs(y, y_pred, loss + penalty)

    def _train_on_device(self, x, y):
        """:meth:`train_on_shard` on a GPU: the step's numbers read from the device in one transfer, before any update.

        Read where each is computed (as on the CPU backends), a step's numbers
        are five waits for a GPU: the labels' range check, the loss, the
        finite test, the L2 penalty's sum and the accuracy. Here each stays a
        0-d device array (the id checks defer, :func:`scratchnet._checks.deferred_checks`;
        out-of-range ids read as 0 meanwhile), and :func:`scratchnet.training.read_back`
        brings them over as one small vector. Then, in the CPU path's order, a
        failed check raises, a non-finite step is refused, and only then are
        the updates launched: none of them waits. Under data parallelism the
        CPU path runs (its allreduce waits anyway).
        """
        self.zero_grad()
        with deferred_checks() as checks:
            y_pred, backprop = self.forward(x, training=True, need_dx=False)
            value, loss_backprop = self._loss_on_device(y, y_pred)
            backprop(loss_backprop(1.0))
            metrics = [(name, _metrics.on_device(fn)(y, y_pred)) for name, fn in self.metrics]
        params = self.trainable_parameters
        with recording.region("regularizer"):
            parts = self._penalty_parts()
        with recording.region("check_finite"):
            grads = [p.grad for p in params if p.grad is not None]
            finite = training.all_finite_on_device(value, grads) if self.check_finite else True
            loss, penalty, logs, finite = self._read_back(value, checks, parts, metrics, finite)
            if self.check_finite:
                training.check_step(self, loss, params, x, y, finite=finite)
        if fused_update.fusable(self, params):  # plain SGD, L2 and a moving average: one kernel per parameter
            fused_update.sgd_l2_ema_step(self, params, summed=True)
        else:
            self._update(params, penalty=penalty)
        self.step += 1
        return logs

    def _loss_on_device(self, y, y_pred):
        """``(value, backprop)`` of the loss with the value not read (a 0-d array, or a custom loss's float)."""
        on_device = getattr(self.loss, "on_device", None)
        return on_device(y, y_pred) if on_device is not None else self.loss(y, y_pred)

    def _penalty_parts(self):
        """What :meth:`regularization_loss` sums, not read yet: ``(regularizer, l1 sum, l2 sum)`` per penalty.

        An ``L1L2`` penalty's sums stay on the device; any other regularizer
        gives its own float (``(None, float, 0.0)``), read where it is computed.
        """
        be = get_backend()
        parts = []
        for p in self.parameters():
            r = p.regularizer
            if r is None:
                continue
            if type(r) is _regularizers.L1L2:
                parts.append((r, abs(p.value).sum() if r.l1 else 0.0,
                              be.sum_of_squares_on_device(p.value) if r.l2 else 0.0))
            else:
                parts.append((None, r(p.value), 0.0))
        return parts

    def _read_back(self, value, checks, parts, metrics, finite=True):
        """Read the step's numbers in one transfer; raise a deferred check's error; return ``(loss, penalty, logs, finite)``.

        ``logs`` holds the loss with the penalty (summed in :meth:`regularization_loss`'s
        order and arithmetic) and the metrics.
        """
        sums = [v for _, l1, l2 in parts for v in (l1, l2)]
        numbers = training.read_back([value, finite, *checks.flags, *sums, *(m for _, m in metrics)])
        loss, finite = numbers[0], bool(numbers[1])
        k = 2 + len(checks.flags)
        checks.raise_first(numbers[2:k])
        penalty = 0
        for (r, _, _), l1, l2 in zip(parts, numbers[k::2], numbers[k + 1::2]):
            if r is None:
                penalty += l1
                continue
            term = 0.0
            if r.l1:
                term += r.l1 * l1
            if r.l2:
                term += r.l2 * l2
            penalty += term
        k += len(sums)
        penalty = float(penalty)
        logs = {"loss": loss + penalty}
        logs.update((name, v) for (name, _), v in zip(metrics, numbers[k:]))
        return loss, penalty, logs, finite

    def _update(self, params, check=None, loss=0.0, penalty=None):
        """The end of a step in three phases: the penalties' gradients, the optimizer, the moving average.

        ``check()``, when given, runs after the gradients are final (the
        penalties' added, averaged over the ranks) and before the optimizer:
        it raises to refuse the step. ``loss`` is this rank's loss, shared
        with the other ranks through the gradients when it is not finite.
        Returns the penalty of the weights before the step (``penalty`` when
        the caller has it already: it is not summed again)."""
        with recording.region("regularizer"):
            if penalty is None:
                penalty = self.regularization_loss()
            self.regularization_backward()
        if self.data_parallel is not None:
            if check is not None:  # every rank must refuse the same step: see share_nonfinite_loss
                training.share_nonfinite_loss(loss, params)
            # After the regularizer: each rank's gradient is weighted by its share of the batch, so
            # the L2 term every rank added comes out once, and clipping sees the global gradient.
            with recording.region("allreduce"):
                self.data_parallel.allreduce_gradients()
        if check is not None:
            with recording.region("check_finite"):
                check()
        with recording.region("optimizer"):
            self.optimizer.step(params)
        if self.ema is not None:
            with recording.region("moving_average"):
                self.ema.apply(params)
        return penalty

    def test_on_batch(self, x, y):
        """Loss and metrics of one batch in inference mode (no update)."""
        self._require_compiled("test_on_batch")
        y = as_backend_array(y, self.dtype)
        if get_backend().xp is not numpy:  # on a GPU, the numbers in one transfer (see _train_on_device)
            with deferred_checks() as checks:
                y_pred, _ = self.forward(as_backend_array(x, self.dtype), training=False)
                value, _ = self._loss_on_device(y, y_pred)
                metrics = [(name, _metrics.on_device(fn)(y, y_pred)) for name, fn in self.metrics]
            return self._read_back(value, checks, self._penalty_parts(), metrics)[2]
        y_pred, _ = self.forward(as_backend_array(x, self.dtype), training=False)
        value, _ = self.loss(y, y_pred)
        return self._compute_logs(y, y_pred, float(value) + self.regularization_loss())

    def predict(self, x, batch_size=32):
        """Inference-mode outputs for ``x``, batch by batch, as one host (NumPy) array."""
        batch_size = check_count("predict", "batch_size", batch_size)
        n = training.num_examples(x)
        outs = []
        for start in range(0, n, batch_size):
            y, _ = self.forward(as_backend_array(x[start : start + batch_size], self.dtype), training=False)
            outs.append(to_numpy(y))
        return numpy.concatenate(outs) if outs else numpy.zeros((0,), dtype=self.dtype)

    def evaluate(self, x, y, batch_size=32, callbacks=None, verbose=0):
        """``{"loss": ..., <metric>: ...}`` averaged over all of ``x`` (weighted by batch size)."""
        self._require_compiled("evaluate")
        training.num_examples(x, y, "evaluate")
        batch_size = check_count("evaluate", "batch_size", batch_size)
        _check_verbose("evaluate", verbose)
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
        from . import callbacks as _callbacks

        self._require_compiled("fit")
        n = training.num_examples(x, y, "fit")
        batch_size = check_count("fit", "batch_size", batch_size)
        epochs = check_count("fit", "epochs", epochs)
        steps_per_epoch = check_count("fit", "steps_per_epoch", steps_per_epoch, none=True)
        verbose = _check_verbose("fit", verbose)
        check_bool("fit", "shuffle", shuffle)
        check_bool("fit", "check_finite", check_finite)
        if n == 0:
            raise ValueError(f"{self.name}: fit needs at least one example")
        x, y, validation_data = _hold_out(x, y, validation_split, validation_data)
        if validation_data is not None:
            x_val, y_val = _check_validation_data(validation_data, x, y)
        callbacks = list(callbacks or [])
        root = self.data_parallel is None or self.data_parallel.is_root  # one progress bar for all the ranks
        if verbose and root and not any(isinstance(c, _callbacks.ProgressBar) for c in callbacks):
            callbacks.append(_callbacks.ProgressBar())
        batches = training.array_batches(x, y, batch_size, shuffle=shuffle)
        if steps_per_epoch is None:
            steps_per_epoch = math.ceil(len(x) / batch_size)
        else:
            batches = _epochs_of(batches, steps_per_epoch)
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


def _check_verbose(op, verbose):
    """Keras's ``verbose``: 0 (silent), 1 (a progress bar), 2 (one line per epoch), or ``"auto"`` (1); as an int."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, numpy.bool_)) or (isinstance(verbose, (int, numpy.integer)) and verbose in (0, 1, 2)):
        return int(verbose)
    raise ValueError(f"{op}: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")


def _hold_out(x, y, validation_split, validation_data):
    """``(x, y, validation_data)`` with the last ``validation_split`` of the examples held out, as Keras does.

    Keras trains on the first ``ceil(n * (1 - split))`` examples, before any
    shuffling, so the held-out ones are the same every epoch.
    """
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0 <= validation_split < 1:
        raise ValueError(f"fit: validation_split must be a number in [0, 1), got {validation_split!r}")
    if not validation_split:
        return x, y, validation_data
    if validation_data is not None:
        raise ValueError("fit: give validation_data or validation_split, not both")
    n = len(x)
    split_at = math.ceil(n * (1 - validation_split))
    if split_at == n:
        raise ValueError(f"fit: validation_split={validation_split!r} of {n} examples leaves no example to validate on")
    return x[:split_at], y[:split_at], (x[split_at:], y[split_at:])


def _check_validation_data(validation_data, x, y):
    """``(x_val, y_val)``, checked before training rather than at the end of the first epoch."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        got = (f"a {type(validation_data).__name__} of {len(validation_data)}"
               if isinstance(validation_data, (tuple, list)) else type(validation_data).__name__)
        raise ValueError(f"fit: validation_data must be a pair (x_val, y_val), got {got}")
    x_val, y_val = validation_data
    n = len(x_val)
    if len(y_val) != n:
        raise ValueError(f"fit: validation_data: x_val and y_val must have the same number of examples, "
                         f"got {n} and {len(y_val)}")
    if n == 0:
        raise ValueError("fit: validation_data holds no examples")
    for name, train, val in (("x", x, x_val), ("y", y, y_val)):
        want, got = _per_example(train), _per_example(val)
        if want != got:
            raise ValueError(f"fit: validation_data: {name}_val must have {name}'s shape per example {want}, got {got}")
    return x_val, y_val


def _per_example(a):
    """The shape of one example of ``a``; a trailing axis of 1 (labels as ``(N, 1)``) does not count."""
    shape = tuple(numpy.shape(a)[1:])
    return shape[:-1] if shape and shape[-1] == 1 else shape


def _epochs_of(batches, steps_per_epoch):
    """The batches relabelled: epoch ``i`` is batches ``i * steps_per_epoch`` to ``(i + 1) * steps_per_epoch - 1``."""
    for i, (_, x, y) in enumerate(batches):
        yield i // steps_per_epoch, x, y


def _format_shape(shape):
    if isinstance(shape, list):
        return ", ".join(_format_shape(s) for s in shape)
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


@register
class Sequential(Model):
    """A stack of layers, each feeding the next.

    Parameters
    ----------
    layers : list of Layer
        A layer object may appear more than once (its weights are shared and
        receive the sum of the gradients).
    name : str, optional
    dtype : {"float32", "float64"}, optional
        The dtype of every layer created without one (see :class:`Model`).
    """

    def __init__(self, layers=None, name=None, dtype=None):
        super().__init__(name, dtype)
        self._stack = []
        for layer in layers or []:
            self.add(layer)

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise ValueError(f"{self.name}: Sequential takes layers, got {type(layer).__name__}")
        # The same object again is a second use of the same weights.
        self._track(layer)
        self._stack.append(layer)

    @property
    def layers(self):
        return list(self._stack)

    takes_need_dx = True

    def call(self, x, training=False, need_dx=True):
        """Run the stack; ``backprop(dy)`` runs the layers' backprops in reverse and returns ``dx``.

        With ``need_dx=False`` a layer is told to skip its ``dx`` as long as no
        layer before it has trainable weights (their gradients need it), and
        the layers before the first trainable one are not backpropagated at
        all; ``backprop`` then returns ``None``.
        """
        if not self._stack:
            raise ValueError(f"{self.name}: the model has no layers")
        backprops = []  # (backprop, whether the layer's input needs its gradient, whether the layer trains)
        stack, i = self._stack, 0
        while i < len(stack):
            # A layer may run fused with the one before it (Layer.forward_after): the pair is one step here.
            fused = stack[i + 1].forward_after(stack[i], x, training) if i + 1 < len(stack) else None
            if fused is not None:
                (x, backprop), group = fused, stack[i : i + 2]
            else:
                (x, backprop), group = stack[i].forward(x, training, need_dx=need_dx), stack[i : i + 1]
            i += len(group)
            trains = any(p.trainable for layer in group for p in layer.parameters())
            backprops.append((backprop, need_dx, trains))
            need_dx = need_dx or trains

        def backprop(dy):
            for bp, wants_dx, trains in reversed(backprops):
                if not (wants_dx or trains):
                    return None  # this layer and all before it: no weights to train, no dx wanted
                dy = bp(dy)
            return dy

        return x, backprop

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype.name, "layers": [serialize(layer) for layer in self._stack]}

    @classmethod
    def from_config(cls, config):
        return cls([deserialize(c) for c in config["layers"]], name=config.get("name"), dtype=config.get("dtype"))
