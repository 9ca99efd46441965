"""Callbacks for the training loop (``fit``, ``scratchnet train``): progress bar, TensorBoard, CSV/JSONL logs, checkpoints.

The loop (:func:`scratchnet.training.train`) calls the hooks of Keras's
callback protocol, in this order::

    set_params({"epochs", "steps", "initial_step", "total_steps", ...}); set_model(model)
    on_train_begin(logs)
      on_epoch_begin(epoch, logs)
        on_train_batch_begin(batch, logs); on_train_batch_end(batch, logs)   # per batch
        on_test_begin(logs); on_test_batch_begin/end(...); on_test_end(logs) # evaluation
      on_epoch_end(epoch, logs)            # logs: loss, accuracy, val_loss, val_accuracy
    on_train_end(logs)

``on_train_end`` also comes when a step is refused for holding a NaN or an
infinity (:class:`scratchnet.training.NonFiniteError`): the model is then the
last finite one and ``model.stop_training`` is True; the error reaches the
caller after the callbacks have ended.

Batch logs hold the running means of the epoch so far. Every logger here
records the same scalars: the logs plus the optimizer's ``learning_rate``,
against the global step ``model.step``.
"""
from __future__ import annotations

from .base import Callback
from .checkpoints import CheckpointWriteError, ModelCheckpoint, StopOnSignal
from .logs import CSVLogger, JSONLLogger
from .progress import ProgressBar
from .tensorboard import TensorBoard

__all__ = ["CSVLogger", "Callback", "CheckpointWriteError", "JSONLLogger", "ModelCheckpoint", "ProgressBar",
           "StopOnSignal", "TensorBoard"]
