"""Checkpoints: save a training run and bring it back, safely.

A checkpoint is one file, ``<directory>/<prefix>-<step>`` (``runs/model-1000``,
the global step in the name, as ``tf.train.Saver`` writes it), holding

- the weights, by parameter name (``"layer1/weights"``);
- the moving averages, as ``"<name>/ExponentialMovingAverage"`` (TensorFlow's names);
- the optimizer's state (its iteration count and slots);
- the global step and the state of the global random generator, so that a
  resumed run continues exactly as an uninterrupted one would.

A small index file, ``<directory>/checkpoint``, names the newest checkpoint
and those kept; :func:`latest_checkpoint` reads it.

Safety
------
- Every file is written to a temporary name, flushed to disk (``fsync``) and
  renamed over its final name (``os.replace`` is atomic). A run killed while
  saving leaves the previous checkpoint and the index that names it intact
  (and, at worst, a hidden ``.<name>.*.tmp`` file, never read, safe to delete).
- The file ends with the SHA-256 of everything before it. A truncated or
  corrupted file is detected and reported before anything is loaded.
- Nothing is unpickled: the file is a JSON header plus raw little-endian
  array bytes (:mod:`scratchnet.archive`), read back with ``numpy.frombuffer``.
- :meth:`Checkpoint.restore` validates every name and shape first and only
  then changes the model: it never leaves a model half-restored.

The file format is :mod:`scratchnet.archive`'s.
"""
from __future__ import annotations

import json
import os
import re

import numpy

from . import random as _random
from .archive import CheckpointError, atomic_write, read_archive, write_archive
from .backend import get_backend, to_numpy

INDEX_NAME = "checkpoint"
_CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*-[0-9]+")
#: The checkpoint format this code writes and reads.
FORMAT_VERSION = 1

__all__ = ["Checkpoint", "CheckpointError", "latest_checkpoint", "list_variables", "load_variables",
           "read_archive", "write_archive"]


# ---------------------------------------------------------------------------
# The index: which checkpoints exist and which is the newest
# ---------------------------------------------------------------------------


def _read_index(directory):
    path = os.path.join(directory, INDEX_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint index {path!r} is unreadable ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("all"), list):
        raise CheckpointError(f"checkpoint index {path!r} is not a scratchnet index")
    # save() deletes the oldest names listed here, and latest_checkpoint()
    # opens one: only plain file names inside the directory are accepted, so
    # an edited or foreign index can never point outside it.
    latest = index.get("latest")
    for name in index["all"] + ([] if latest is None else [latest]):
        if not _is_plain_name(name):
            raise CheckpointError(
                f"checkpoint index {path!r} names {name!r}, which is not a file name inside {directory!r}"
            )
    return index


def _is_plain_name(name):
    return (isinstance(name, str) and name not in ("", ".", "..", INDEX_NAME) and not name.startswith(".")
            and os.path.basename(name) == name and (os.altsep is None or os.altsep not in name))


def _write_index(directory, latest, kept):
    text = json.dumps({"latest": latest, "all": kept}, indent=1).encode("utf-8")
    atomic_write(os.path.join(directory, INDEX_NAME), lambda f: f.write(text))


def latest_checkpoint(directory):
    """The path of the newest checkpoint in ``directory``, or None if there is none.

    As ``tf.train.latest_checkpoint``: read from the index, so a checkpoint
    whose save was interrupted is never returned. An unreadable index, or one
    that names a file outside ``directory``, is a :class:`CheckpointError`.
    """
    index = _read_index(directory)
    if index is None or not index.get("latest"):
        return None
    path = os.path.join(directory, index["latest"])
    return path if os.path.exists(path) else None


def list_checkpoints(directory):
    """Paths of the checkpoints in ``directory``, oldest first: those the index names, then any other
    ``<prefix>-<step>`` file (an index lost or damaged), by step."""
    try:
        index = _read_index(directory) or {"all": []}
    except CheckpointError:
        index = {"all": []}
    named = [n for n in index["all"] if os.path.isfile(os.path.join(directory, n))]
    try:
        files = os.listdir(directory)
    except OSError:
        files = []
    others = sorted((n for n in files if _CHECKPOINT_NAME.fullmatch(n) and n not in named),
                    key=lambda n: int(n.rpartition("-")[2]))
    return [os.path.join(directory, n) for n in named + others]


def list_variables(path):
    """``[(name, shape)]`` of the weights and moving averages in a checkpoint (``tf.train.list_variables``)."""
    meta, arrays = read_archive(path)
    return [(name, tuple(arrays[name].shape)) for name in _variable_names(meta)]


def load_variables(path):
    """``{name: numpy.ndarray}`` of the weights and moving averages in a checkpoint."""
    meta, arrays = read_archive(path)
    return {name: arrays[name] for name in _variable_names(meta)}


def _variable_names(meta):
    return list(meta["weights"]) + list(meta["ema"]["shadows"].values() if meta.get("ema") else [])


def parse_header(path, meta, arrays):
    """Validate a checkpoint's header against its arrays, field by field, changing nothing.

    Returns ``{"step", "weights", "optimizer", "ema", "rng"}`` with the
    optimizer's and the moving averages' states as ``{key: array}``.

    Raises
    ------
    CheckpointError
        Naming the file and the first malformed field: a hand-edited or
        crafted file has a valid checksum, so every field is checked here.
    """
    def bad(field, problem):
        return CheckpointError(f"{path!r}: header field {field!r} {problem}; nothing was restored")

    def array_named(field, name):
        if not isinstance(name, str) or name not in arrays:
            raise bad(field, f"names {name!r}, which is not an array of the file")
        return arrays[name]

    if not isinstance(meta, dict):
        raise CheckpointError(f"{path!r}: the header's meta is a {type(meta).__name__}, not an object")
    if meta.get("format") != "scratchnet.checkpoint":
        raise CheckpointError(f"{path!r} is a {meta.get('format')!r} file, not a checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise bad("version", f"is {meta.get('version')!r}; this scratchnet reads checkpoint format version "
                             f"{FORMAT_VERSION} (a newer scratchnet wrote this file?)")
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad("step", f"must be a non-negative integer, got {step!r}")
    weights = meta.get("weights")
    if not isinstance(weights, list):
        raise bad("weights", f"must be a list of names, got {type(weights).__name__}")
    for name in weights:
        array_named("weights", name)
    optimizer = meta.get("optimizer")
    if optimizer is not None:
        if not isinstance(optimizer, dict) or not isinstance(optimizer.get("class"), str) \
                or not isinstance(optimizer.get("state"), dict):
            raise bad("optimizer", "must be {'class': name, 'state': {key: array name}}")
        optimizer = {"class": optimizer["class"],
                     "state": {k: array_named(f"optimizer.state.{k}", a) for k, a in optimizer["state"].items()}}
    ema = meta.get("ema")
    if ema is not None:
        if not isinstance(ema, dict) or not isinstance(ema.get("shadows"), dict) or not isinstance(ema.get("name"), str):
            raise bad("ema", "must be {'name': str, 'decay': float, 'shadows': {parameter: array name}}")
        shadows = {}
        for pname, a in ema["shadows"].items():
            shadow = array_named(f"ema.shadows.{pname}", a)
            if shadow.dtype.kind != "f":
                raise bad(f"ema.shadows.{pname}", f"names an array of {shadow.dtype}, not floats")
            shadows[pname] = shadow
        ema = {"name": ema["name"], "shadows": shadows}
    rng = meta.get("rng")
    if rng is not None:
        try:
            _random.check_state(rng)
        except ValueError as e:
            raise bad("rng", f"is not a generator state ({e})") from None
    return {"step": step, "weights": weights, "optimizer": optimizer, "ema": ema, "rng": rng}


# ---------------------------------------------------------------------------
# Checkpoint: what a training run saves and restores
# ---------------------------------------------------------------------------


class Checkpoint:
    """Save and restore a model with its optimizer, moving averages, step and RNG.

    Parameters
    ----------
    model : scratchnet.Model
        Supplies the weights (``model.parameters()``) and the global step
        (``model.step``).
    optimizer : scratchnet.optimizers.Optimizer, optional
        Defaults to ``model.optimizer``.
    ema : scratchnet.ExponentialMovingAverage, optional
        Defaults to ``model.ema``.

    Examples
    --------
    >>> ckpt = sn.Checkpoint(model=model, optimizer=opt, ema=ema)
    >>> ckpt.save("runs/mlp", step=model.step)            # runs/mlp/model-1000
    >>> ckpt.restore(sn.latest_checkpoint("runs/mlp"))    # everything back
    >>> ckpt.restore(path, ema_into_weights=True)         # evaluate on the averages
    """

    def __init__(self, model, optimizer=None, ema=None):
        self.model = model
        self.optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        self.ema = ema if ema is not None else getattr(model, "ema", None)

    # -- saving ----------------------------------------------------------------------
    def save(self, directory, step=None, prefix="model", max_to_keep=5):
        """Write ``<directory>/<prefix>-<step>``, update the index, delete the oldest beyond ``max_to_keep``.

        Parameters
        ----------
        directory : str
            Created if missing.
        step : int, optional
            The global step, part of the file name; defaults to ``model.step``.
        prefix : str
        max_to_keep : int or None
            How many checkpoints to keep (the newest); ``None`` keeps all.

        Returns
        -------
        str
            The path written, e.g. ``"runs/mlp/model-1000"``.
        """
        if step is None:
            step = getattr(self.model, "step", 0)
        if isinstance(step, bool) or not isinstance(step, (int, numpy.integer)) or step < 0:
            raise ValueError(f"Checkpoint.save: step must be a non-negative int, got {step!r}")
        if max_to_keep is not None and (not isinstance(max_to_keep, int) or max_to_keep < 1):
            raise ValueError(f"Checkpoint.save: max_to_keep must be a positive int or None, got {max_to_keep!r}")
        if not _is_plain_name(prefix):
            raise ValueError(f"Checkpoint.save: prefix must be a plain file name other than {INDEX_NAME!r}, got {prefix!r}")
        os.makedirs(directory, exist_ok=True)
        meta, arrays = self._collect(int(step))
        name = f"{prefix}-{int(step)}"
        path = os.path.join(directory, name)
        write_archive(path, meta, arrays)

        # The index is replaced only once the checkpoint is safely on disk.
        index = _read_index(directory) or {"all": []}
        kept = [n for n in index["all"] if n != name] + [name]
        dropped = kept[:-max_to_keep] if max_to_keep else []
        kept = kept[len(dropped):]
        _write_index(directory, name, kept)
        for old in dropped:
            try:
                os.remove(os.path.join(directory, old))
            except FileNotFoundError:
                pass
        return path

    def _collect(self, step):
        arrays = {}
        weights = []
        for p in self.model.parameters():
            arrays[p.name] = to_numpy(p.value)
            weights.append(p.name)
        meta = {"format": "scratchnet.checkpoint", "version": FORMAT_VERSION, "step": step, "weights": weights,
                "optimizer": None, "ema": None, "rng": _random.get_state()}
        if self.ema is not None:
            shadows = {}
            for pname, shadow in self.ema.state_dict().items():
                key = self.ema.average_name(pname)
                _add(arrays, key, shadow)
                shadows[pname] = key
            meta["ema"] = {"name": self.ema.name, "decay": self.ema.decay, "shadows": shadows}
        if self.optimizer is not None:
            state = {}
            for k, a in self.optimizer.state_dict().items():
                key = f"optimizer/{k}"
                _add(arrays, key, a)
                state[k] = key
            meta["optimizer"] = {"class": type(self.optimizer).__name__, "state": state}
        return meta, arrays

    # -- restoring -------------------------------------------------------------------
    def restore(self, path, include=None, mapping=None, ema_into_weights=False, strict=True):
        """Load a checkpoint into the model, all-or-nothing.

        With no options this is a full restore, for resuming training: the
        weights, the optimizer state, the moving averages, ``model.step`` and
        the global RNG state all come back. Any of the options makes it a
        partial restore that loads weights only:

        Parameters
        ----------
        path : str
            A checkpoint file (``latest_checkpoint(directory)``).
        include : list of str or Parameter, optional
            Restore only these parameters (TF's ``Saver([v1])``); the others
            keep their values.
        mapping : dict of str -> Parameter, optional
            Restore each parameter from the checkpoint variable named by its
            key (TF's ``Saver({"v1": other_v1})``), e.g. a moving average:
            ``mapping=ema.variables_to_restore(model)``.
        ema_into_weights : bool
            Load each trainable weight from its moving average (and others
            from themselves): the averaged model, ready to evaluate.
        strict : bool
            When True (default), every parameter restored must be in the
            checkpoint, and a full restore also refuses checkpoint weights the
            model lacks. When False, missing names are skipped. A wrong shape
            is always an error.

        Raises
        ------
        CheckpointError
            The file is corrupt, or does not fit the model; the message lists
            every missing, unexpected or mis-shaped variable. The model is
            unchanged.
        """
        if sum(x is not None and x is not False for x in (include, mapping, ema_into_weights)) > 1:
            raise ValueError("Checkpoint.restore: pass at most one of include, mapping and ema_into_weights")
        meta, arrays = read_archive(path)
        header = parse_header(path, meta, arrays)
        full = include is None and mapping is None and not ema_into_weights
        params = list(self.model.parameters())
        by_name = {p.name: p for p in params}
        variables = set(_variable_names(meta))

        plan = self._plan(meta, params, by_name, include, mapping, ema_into_weights)
        problems = []
        missing = [src for src in plan if src not in variables]
        if missing and strict:
            problems.append(f"missing from the checkpoint: {', '.join(missing)}")
        plan = {src: p for src, p in plan.items() if src in variables}
        wrong = [f"{src} {tuple(arrays[src].shape)} -> {p.name} {p.shape}"
                 for src, p in plan.items() if tuple(arrays[src].shape) != tuple(p.shape)]
        if wrong:
            problems.append(f"shape differs (checkpoint -> model): {'; '.join(wrong)}")
        kinds = [f"{src} ({arrays[src].dtype})" for src, p in plan.items() if arrays[src].dtype.kind != "f"]
        if kinds:
            problems.append(f"not float data: {', '.join(kinds)}")
        if full and strict:
            unexpected = [n for n in header["weights"] if n not in by_name]
            if unexpected:
                problems.append(f"in the checkpoint but not in the model: {', '.join(unexpected)}")

        optimizer_state = ema_state = None
        if full:
            if self.optimizer is not None and header["optimizer"] is not None:
                saved_class = header["optimizer"]["class"]
                if saved_class != type(self.optimizer).__name__:
                    problems.append(f"optimizer: the checkpoint holds {saved_class} state, "
                                    f"the optimizer is {type(self.optimizer).__name__}")
                optimizer_state = header["optimizer"]["state"]
                try:
                    self.optimizer.check_state_dict(optimizer_state)
                except ValueError as e:
                    problems.append(f"optimizer: {e}")
                problems += _check_state_shapes("optimizer slot", optimizer_state, by_name,
                                                lambda k: k.rpartition(":")[0] if ":" in k else None)
            if self.ema is not None and header["ema"] is not None:
                ema_state = header["ema"]["shadows"]
                problems += _check_state_shapes("moving average", ema_state, by_name, lambda k: k)
        if problems:
            raise CheckpointError(f"cannot restore {path!r} into the model (nothing was changed):\n  "
                                  + "\n  ".join(problems))

        # Everything checked: now change the model, optimizer, averages and RNG.
        # None of these steps can fail on what was checked above.
        xp = get_backend().xp
        values = [(p, xp.asarray(arrays[src]).astype(p.dtype, copy=False)) for src, p in plan.items()]
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        if ema_state is not None:
            self.ema.load_state_dict(ema_state)
        for p, v in values:
            p.value = v
        if full:
            if hasattr(self.model, "step"):
                self.model.step = header["step"]
            if header["rng"] is not None:
                _random.set_state(header["rng"])
        return header["step"]

    def _plan(self, meta, params, by_name, include, mapping, ema_into_weights):
        """``{checkpoint variable name: parameter}`` for the restore asked for."""
        if mapping is not None:
            for src, p in mapping.items():
                if not hasattr(p, "value"):
                    raise ValueError(f"Checkpoint.restore: mapping[{src!r}] must be a Parameter, got {type(p).__name__}")
            return dict(mapping)
        if include is not None:
            names = [x.name if hasattr(x, "name") and not isinstance(x, str) else x for x in include]
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise ValueError(f"Checkpoint.restore: include names parameters the model does not have: "
                                 f"{', '.join(unknown)} (the model has: {', '.join(by_name)})")
            return {n: by_name[n] for n in names}
        if ema_into_weights:
            suffix = meta["ema"]["name"] if meta.get("ema") else "ExponentialMovingAverage"
            return {f"{p.name}/{suffix}" if p.trainable else p.name: p for p in params}
        return {p.name: p for p in params}


def _add(arrays, key, a):
    if key in arrays:
        raise ValueError(f"Checkpoint.save: two entries are named {key!r}; rename the parameter")
    arrays[key] = a


def _check_state_shapes(what, state, by_name, param_of):
    problems = []
    for key, a in state.items():
        pname = param_of(key)
        if pname is None:
            continue
        p = by_name.get(pname)
        if p is None:
            problems.append(f"{what} {key!r} belongs to a parameter the model does not have")
        elif tuple(a.shape) != tuple(p.shape):
            problems.append(f"{what} {key!r} has shape {tuple(a.shape)} but {pname} has {p.shape}")
    return problems
