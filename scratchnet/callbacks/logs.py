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
    once. A line that is not a whole record (a write cut short) is dropped
    then, wherever it is: it is not data, and must not stop a resume.
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
        write them again) and torn lines (a run killed mid-write); the file is replaced atomically."""
        if not os.path.exists(self.path):
            return
        kept = "".join(self._keep(_complete_lines(self.path), step)).encode("utf-8")
        atomic_write(self.path, lambda f: f.write(kept))

    def read(self):
        """The file's records, as dicts of numbers (NaN and infinities as floats); [] when there is no file."""
        if not os.path.exists(self.path):
            return []
        return self._read()

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
        rows = csv.DictReader(_complete_lines(self.path))
        return [{k: _cell(v) for k, v in row.items() if v not in ("", None) and k is not None} for row in rows]

    def _keep(self, lines, step):
        if not lines:
            return []
        header = next(csv.reader(lines[:1]))
        steps = [(line, _csv_step(line, header)) for line in lines[1:]]
        return lines[:1] + [line for line, s in steps if s is not None and s <= step]


class JSONLLogger(_EpochLogger):
    """A JSON Lines file: one ``{"epoch", "step", "loss", ..., "learning_rate"}`` object per epoch.

    NaN and the infinities are not JSON numbers. They are written as the
    strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (what ``float()``
    and JavaScript's ``Number()`` read back), so that the file stays strict
    JSON and a diverged run is visible as such, never as a missing value;
    :meth:`read` turns them back into floats (and the ``null`` of older files
    into NaN).
    """

    def _write(self, f, record):
        f.write(json.dumps({k: _json_number(v) for k, v in record.items()}) + "\n")

    def _read(self):
        records = (_parse(line) for line in _complete_lines(self.path) if line.strip())
        return [{k: _number(v) for k, v in r.items()} for r in records if r is not None]

    def _keep(self, lines, step):
        records = ((line, _parse(line)) for line in lines if line.strip())
        return [line for line, r in records if r is not None and int(r["step"]) <= step]


#: How the values that JSON has no number for are written, and read back.
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_number(v):
    """``v``, or for a NaN or an infinity its name as a string."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def _number(v):
    """A value read back: the names of NaN and the infinities as floats, ``null`` (older files' NaN) as NaN."""
    if v is None:
        return math.nan
    if isinstance(v, str):
        return _NON_FINITE.get(v, v)
    return v


def _parse(line):
    """The record on ``line``, or None when it is not one (a torn write in the middle of the file)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or isinstance(record.get("step"), bool) or not isinstance(record.get("step"), int):
        return None
    return record


def _cell(text):
    """A CSV cell as a number where it is one (``"3"``, ``"0.25"``, ``"nan"``, ``"inf"``), else the text (a run's name)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _csv_step(line, header):
    """The step of a CSV row, or None when the row is torn (every whole row has a cell per column)."""
    cells = next(csv.reader([line]), [])
    if len(cells) != len(header):
        return None
    try:
        return int(cells[header.index("step")])
    except ValueError:
        return None


def _complete_lines(path):
    """The file's lines, each ending in a newline; a torn last line (a write cut short) is not data."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    return lines
