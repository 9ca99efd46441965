"""``Checkpoint``: save a training run (weights, optimizer, moving averages, step, RNG) and restore it.

Beside it: ``state.py`` (how optimizer slots, moving averages and carried states map to parameters, checked before a
restore), ``rotation.py`` (which checkpoints a save keeps and deletes) and ``temporaries.py`` (what a killed save left).
"""
from __future__ import annotations

import os

import numpy

from .. import random as _random
from ..archive import CheckpointError, read_archive, write_archive
from ..backend import get_backend, to_numpy
from ..training import NonFiniteError  # one error for a non-finite step and a non-finite save
from .header import FORMAT_VERSION, parse_header, variable_names
from .index import INDEX_NAME, is_plain_name, read_index, write_index
from .rotation import _delete_own_checkpoint, _rotate, first_nonfinite
from .state import (_cast_to_parameters, _check_carried_states, _check_state_shapes, _check_weight_values,
                    _shadow_parameter, _slot_parameter, _stateful_layers)
from .temporaries import remove_stale_temporaries

__all__ = ["Checkpoint", "NonFiniteError", "first_nonfinite", "remove_stale_temporaries"]


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
    def save(self, directory, step=None, prefix="model", max_to_keep=5, allow_nonfinite=False):
        """Write ``<directory>/<prefix>-<step>``, update the index, delete the oldest beyond ``max_to_keep``.

        Rotation deletes only checkpoints this saver wrote: names of the exact
        form ``<prefix>-<step>`` that the index lists and that are checkpoint
        files. Another prefix's checkpoints stay in the index, untouched; any
        other file it names (an edited ``"notes.txt"``) is dropped from it with
        a warning and left on disk. A damaged index (not JSON, naming
        ``"../x"``) is a :class:`CheckpointError` before anything is written.

        Parameters
        ----------
        directory : str
            Created if missing.
        step : int, optional
            The global step, part of the file name; defaults to ``model.step``.
        prefix : str
        max_to_keep : int or None
            How many checkpoints to keep (the newest); ``None`` keeps all.
        allow_nonfinite : bool
            A checkpoint of NaN or Inf weights (or optimizer slots, or moving
            averages) is refused by default: it could only replace a good one.
            With True it is written, and rotation keeps the newest finite
            checkpoint besides the ``max_to_keep`` newest.

        Returns
        -------
        str
            The path written, e.g. ``"runs/mlp/model-1000"``.

        Raises
        ------
        NonFiniteError
            A saved value is NaN or Inf (and ``allow_nonfinite`` is False);
            nothing is written.
        CheckpointError
            The index is damaged (:func:`~scratchnet.checkpoint.index.read_index`);
            nothing is written.
        """
        if step is None:
            step = getattr(self.model, "step", 0)
        if isinstance(step, bool) or not isinstance(step, (int, numpy.integer)) or step < 0:
            raise ValueError(f"Checkpoint.save: step must be a non-negative int, got {step!r}")
        if max_to_keep is not None and (isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int)
                                        or max_to_keep < 1):
            raise ValueError(f"Checkpoint.save: max_to_keep must be a positive int or None, got {max_to_keep!r}")
        if not is_plain_name(prefix):
            raise ValueError(f"Checkpoint.save: prefix must be a plain file name other than {INDEX_NAME!r}, got {prefix!r}")
        meta, arrays = self._collect(int(step))
        nonfinite = first_nonfinite(arrays)
        if nonfinite is not None and not allow_nonfinite:
            raise NonFiniteError(
                int(step), nonfinite,
                f"Checkpoint.save: {nonfinite} holds NaN or Inf at step {int(step)}; the checkpoint was not written, "
                f"so the last finite one stays the newest (pass allow_nonfinite=True to save it anyway)")
        index = read_index(directory) or {"all": []}
        os.makedirs(directory, exist_ok=True)
        name = f"{prefix}-{int(step)}"
        path = os.path.join(directory, name)
        write_archive(path, meta, arrays)

        # The index is replaced only once the checkpoint is safely on disk, and
        # a file leaves the rotation (is deleted) only once the index no longer names it.
        kept, dropped = _rotate(directory, index["all"], name, prefix, max_to_keep, finite=nonfinite is None)
        write_index(directory, name, kept)
        for old in dropped:
            _delete_own_checkpoint(directory, old, prefix)
        return path

    def _collect(self, step):
        arrays = {}
        weights = []
        for p in self.model.parameters():
            if p.name in arrays:  # two weights under one name: the file would keep one, restore both from it
                raise CheckpointError(f"cannot save: the model has two different weights named {p.name!r} (a model "
                                      f"built on its own, then put in another under a scope?); nothing was written")
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
        carried = {}
        for key, layer in _stateful_layers(self.model).items():
            if layer.states is not None:  # None: the layer starts its next batch from zeros
                carried[key] = []
                for i, a in enumerate(layer.states):
                    _add(arrays, f"state/{key}/{i}", to_numpy(a))
                    carried[key].append(f"state/{key}/{i}")
        meta["states"] = carried
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
        variables = set(variable_names(meta))

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
                problems += _check_state_shapes("optimizer slot", optimizer_state, by_name, _slot_parameter)
            if self.ema is not None and header["ema"] is not None:
                ema_state = header["ema"]["shadows"]
                problems += _check_state_shapes("moving average", ema_state, by_name, _shadow_parameter)
        stateful = _stateful_layers(self.model) if full else {}
        if full:
            problems += _check_carried_states(header["states"], stateful, strict)
        problems += _check_weight_values(self.model, plan, arrays)  # a negative moving variance, ...
        if problems:
            raise CheckpointError(f"cannot restore {path!r} into the model (nothing was changed):\n  "
                                  + "\n  ".join(problems))

        # Everything checked: now change the model, optimizer, averages and RNG.
        # None of these steps can fail on what was checked above. Every array
        # takes the dtype of the parameter it goes into (as Keras casts on
        # load): a float32 checkpoint restored into a float64 model gives
        # float64 weights, slots and averages, never a mix.
        xp = get_backend().xp
        values = [(p, xp.asarray(arrays[src]).astype(p.dtype, copy=False)) for src, p in plan.items()]
        if optimizer_state is not None:
            optimizer_state = _cast_to_parameters(optimizer_state, by_name, _slot_parameter)
        if ema_state is not None:
            ema_state = _cast_to_parameters(ema_state, by_name, _shadow_parameter)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        if ema_state is not None:
            self.ema.load_state_dict(ema_state)
        for p, v in values:
            p.value = v
        for key, layer in stateful.items():  # a carried state comes back; a layer saved without one starts from zeros
            saved = header["states"].get(key)
            layer.states = None if saved is None else tuple(xp.asarray(a).astype(layer.dtype) for a in saved)
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
