"""``ProgressBar``: tqdm bars of the running loss and metrics."""
from __future__ import annotations

import sys

from .base import Callback


class ProgressBar(Callback):
    """A tqdm progress bar showing the running loss and metrics: one per epoch, or one for the whole run.

    ``fit(verbose=1)`` adds one unless a ProgressBar is given; ``verbose=0``
    or ``ProgressBar(disable=True)`` shows nothing.

    Parameters
    ----------
    per_epoch : bool
        One bar per epoch (Keras's ``fit``), or one bar from the first global
        step to the last (``scratchnet train``), which shows where a resumed
        run starts.
    desc : str, optional
        The bar's label in whole-run mode.
    disable : bool
    file : file object, optional
        Where to draw; tqdm's default (stderr) when None.
    """

    def __init__(self, per_epoch=True, desc=None, disable=False, file=None):
        super().__init__()
        self.per_epoch = bool(per_epoch)
        self.desc = desc
        self.disable = bool(disable)
        self.file = file
        self._bar = None

    def _open(self, total, desc, initial=0, unit="batch"):
        from tqdm.auto import tqdm

        self._close()
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=self.disable,
                         file=self.file if self.file is not None else sys.stderr, dynamic_ncols=True)

    def on_train_begin(self, logs=None):
        if not self.per_epoch:
            self._open(self.params.get("total_steps"), self.desc, self.params.get("initial_step", 0), unit="step")

    def on_epoch_begin(self, epoch, logs=None):
        if self.per_epoch:
            epochs = self.params.get("epochs")
            self._open(self.params.get("steps"), f"Epoch {epoch + 1}/{epochs}" if epochs else f"Epoch {epoch + 1}")

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(_short(logs), refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.per_epoch and self._bar is not None:
            self._bar.set_postfix(_short(logs), refresh=True)
            self._close()

    def on_train_end(self, logs=None):
        self._close()

    def _close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _short(logs):
    return {k: f"{float(v):.4g}" for k, v in (logs or {}).items()}
