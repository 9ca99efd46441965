"""``Callback``: the hooks of Keras's callback protocol, each doing nothing until overridden."""
from __future__ import annotations

class Callback:
    """Base class: every hook does nothing. Override the ones you need.

    Attributes
    ----------
    model : scratchnet.Model
        Set by ``fit`` through :meth:`set_model`.
    params : dict
        ``{"epochs", "steps", "batch_size", "verbose"}``, set by ``fit``.
    """

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        """Training ended: its steps done, stopped, or a non-finite step refused (the model is the last finite one)."""

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    # -- shared by the loggers ---------------------------------------------------------
    def _step(self):
        return int(getattr(self.model, "step", 0) or 0)

    def _learning_rate(self):
        optimizer = getattr(self.model, "optimizer", None)
        return getattr(optimizer, "learning_rate_now", None)

    def _scalars(self, logs):
        """The logs as plain floats, plus ``learning_rate`` when the model has an optimizer."""
        scalars = {k: float(v) for k, v in (logs or {}).items()}
        lr = self._learning_rate()
        if lr is not None:
            scalars["learning_rate"] = float(lr)
        return scalars


def _check_update_freq(name, update_freq):
    if update_freq != "epoch" and (isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1):
        raise ValueError(f"{name}: update_freq must be 'epoch' or a positive int, got {update_freq!r}")
