"""``CSVLogger`` and ``JSONLLogger``: the scalars as files, one record per epoch or every N steps."""
from __future__ import annotations

import csv
import json
import math
import os

from ..archive import atomic_write
from .base import Callback, _check_update_freq


class _EpochLogger(Callback):
    """One record per epoch: ``epoch``, ``step``, the logs and ``learning_rate``.

    With ``update_freq=N`` (steps) instead of ``"epoch"`` it writes a
    ``run="train"`` record every N steps and a ``run="test"`` record at each
    ``on_test_end``, for a step-based loop such as ``scratchnet train``.

    With ``append`` the file is kept, minus any records past the model's
    global step at the start of training: a run resumed from the checkpoint
    of step ``s`` writes the steps after ``s`` again, so each step is logged
    once.
    """

    def __init__(self, path, append=False, update_freq="epoch"):
        super().__init__()
        _check_update_freq(type(self).__name__, update_freq)
        self.path = path
        self.append = bool(append)
        self.update_freq = update_freq
        self._last = None

    def on_train_begin(self, logs=None):
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        if not self.append and os.path.exists(self.path):
            os.remove(self.path)
        elif self.append:
            self.discard_after(self._step())

    def on_epoch_end(self, epoch, logs=None):
        if self.update_freq == "epoch":
            self._record({"epoch": int(epoch), "step": self._step(), **self._scalars(logs)})

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        self._last = (self._step(), self._scalars(logs))
        if self._step() % self.update_freq == 0:
            self.write_scalars("train", self._last[1], self._step())
            self._last = None

    def on_test_end(self, logs=None):
        if self.update_freq != "epoch":
            self.write_scalars("test", logs, self._step())

    def on_train_end(self, logs=None):
        # The last step, when it fell between two update_freq steps.
        if self._last is not None:
            self.write_scalars("train", self._last[1], self._last[0])
            self._last = None

    def write_scalars(self, run, scalars, step):
        """Append one ``{"run", "step", **scalars}`` record (the signature of :meth:`TensorBoard.write_scalars`)."""
        self._record({"run": run, "step": int(step), **{k: float(v) for k, v in (scalars or {}).items()}})

    def discard_after(self, step):
        """Drop the records of steps after ``step`` (a run resumed from the checkpoint of ``step`` will
        write them again) and a torn last line (a run killed mid-write); the file is replaced atomically."""
        if not os.path.exists(self.path):
            return
        kept = "".join(self._keep(_complete_lines(self.path), step)).encode("utf-8")
        atomic_write(self.path, lambda f: f.write(kept))

    def _record(self, record):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # Opened per record, so the file is complete even if training is killed.
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            self._write(f, record)


class CSVLogger(_EpochLogger):
    """A CSV file with one row per epoch (Keras's ``CSVLogger``, plus ``step`` and ``learning_rate``).

    The columns are fixed by the first row (or by the header of the file
    appended to); a missing value is written as an empty cell.
    """

    def _write(self, f, record):
        columns = self._columns(record)
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        if f.tell() == 0:
            writer.writeheader()
        writer.writerow(record)

    def _columns(self, record):
        if os.path.getsize(self.path) > 0:
            with open(self.path, newline="", encoding="utf-8") as f:
                return next(csv.reader(f))
        first = [k for k in ("epoch", "run", "step") if k in record]
        rest = sorted(k for k in record if k not in (*first, "learning_rate"))
        # In step mode a test row may come first; train rows still bring a rate.
        rate = "learning_rate" in record or "run" in record
        return [*first, *rest] + (["learning_rate"] if rate else [])

    def _read(self):
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(_complete_lines(self.path))]

    def _keep(self, lines, step):
        if not lines:
            return []
        column = next(csv.reader(lines[:1])).index("step")
        return lines[:1] + [line for line in lines[1:] if int(next(csv.reader([line]))[column]) <= step]


class JSONLLogger(_EpochLogger):
    """A JSON Lines file: one ``{"epoch", "step", "loss", ..., "learning_rate"}`` object per epoch."""

    def _write(self, f, record):
        # NaN and infinities are not JSON; write them as null.
        clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in record.items()}
        f.write(json.dumps(clean) + "\n")

    def _read(self):
        return [json.loads(line) for line in _complete_lines(self.path) if line.strip()]

    def _keep(self, lines, step):
        return [line for line in lines if line.strip() and int(json.loads(line)["step"]) <= step]


def _complete_lines(path):
    """The file's lines, each ending in a newline; a torn last line (a write cut short) is not data."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return lines
