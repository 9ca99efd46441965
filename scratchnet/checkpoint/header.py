"""What a checkpoint file holds, read and validated field by field."""
from __future__ import annotations

from .. import random as _random
from ..archive import CheckpointError, read_archive

#: The checkpoint format this code writes and reads.
FORMAT_VERSION = 1


def list_variables(path):
    """``[(name, shape)]`` of the weights and moving averages in a checkpoint (``tf.train.list_variables``)."""
    meta, arrays = read_archive(path)
    parse_header(path, meta, arrays)  # a crafted header is a CheckpointError here, not a KeyError below
    return [(name, tuple(arrays[name].shape)) for name in variable_names(meta)]


def load_variables(path):
    """``{name: numpy.ndarray}`` of the weights and moving averages in a checkpoint."""
    meta, arrays = read_archive(path)
    parse_header(path, meta, arrays)
    return {name: arrays[name] for name in variable_names(meta)}


def variable_names(meta):
    """The names of the weights and moving averages of a header that :func:`parse_header` accepted."""
    return list(meta["weights"]) + list(meta["ema"]["shadows"].values() if meta.get("ema") else [])


def parse_header(path, meta, arrays):
    """Validate a checkpoint's header against its arrays, field by field, changing nothing.

    Returns ``{"step", "weights", "optimizer", "ema", "states", "rng"}`` with the
    optimizer's and the moving averages' states as ``{key: array}``, and the
    states carried between batches (a stateful LSTM's) as ``{layer: [arrays]}``.

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
    if len(set(map(repr, weights))) != len(weights):
        raise bad("weights", "names a weight twice")
    for name in weights:
        if array_named("weights", name).dtype.kind != "f":
            raise bad("weights", f"names {name!r}, an array of {arrays[name].dtype}, not floats")
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
    states = meta.get("states") or {}  # older checkpoints have none
    if not isinstance(states, dict) or not all(isinstance(v, list) for v in states.values()):
        raise bad("states", "must be {layer: [array names]}")
    carried = {}
    for key, names in states.items():
        carried[key] = [array_named(f"states.{key}", a) for a in names]
        if any(a.dtype.kind != "f" for a in carried[key]):
            raise bad(f"states.{key}", "names an array that is not floats")
    rng = meta.get("rng")
    if rng is not None:
        try:
            _random.check_state(rng)
        except ValueError as e:
            raise bad("rng", f"is not a generator state ({e})") from None
    return {"step": step, "weights": weights, "optimizer": optimizer, "ema": ema, "states": carried, "rng": rng}


# ---------------------------------------------------------------------------
# Checkpoint: what a training run saves and restores
