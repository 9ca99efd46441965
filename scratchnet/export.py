"""Export a trained model to one file, and load it back without the code that built it.

The file holds the architecture (the layers' configs as JSON, from
``scratchnet.layers.serialize``), the input shape, and the weights in Keras
order. :func:`load_model` rebuilds the :class:`scratchnet.Sequential` from the
registry of layers (the built-in ones and those decorated with
``@sn.layers.register``) and loads the weights: the counterpart of TF 1's
frozen ``combined_model.pb`` (seed 002, section 4.6), in the same checksummed,
pickle-free format as the checkpoints (:func:`scratchnet.checkpoint.write_archive`).

A subclassed :class:`scratchnet.Model` is code, not configuration: save its
weights with a :class:`scratchnet.Checkpoint` instead.
"""
from __future__ import annotations

from . import random as _random
from .backend import to_numpy
from .checkpoint import CheckpointError, read_archive, write_archive
from .model import Sequential
from .serialization import deserialize, serialize

FORMAT = "scratchnet.model"


def save_model(model, path):
    """Write ``model``'s architecture and weights to ``path`` (atomically).

    Parameters
    ----------
    model : scratchnet.Sequential
        Built (called once, or ``model.build(input_shape)``), made of
        built-in layers.
    path : str
    """
    if not isinstance(model, Sequential):
        raise ValueError(
            f"save_model: only a Sequential of registered layers can be exported, got {type(model).__name__}; "
            f"save a subclassed model's weights with sn.Checkpoint"
        )
    params = list(model.parameters())
    if not model.built or model.input_shape is None:
        raise ValueError(f"save_model: model {model.name!r} is not built; call it on a batch or model.build(input_shape) first")
    meta = {
        "format": FORMAT,
        "version": 1,
        "model": serialize(model),
        "input_shape": list(model.input_shape),
        "weights": [p.name for p in params],
    }
    write_archive(path, meta, {f"weight_{i}": to_numpy(p.value) for i, p in enumerate(params)})


def load_model(path):
    """The model saved by :func:`save_model`, built and with its weights; ready to ``predict``.

    Raises
    ------
    scratchnet.checkpoint.CheckpointError
        The file is corrupt or truncated, or is not an exported model.
    """
    meta, arrays = read_archive(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"load_model: {path!r} is a {meta.get('format')!r} file, not an exported model")
    model = deserialize(meta["model"])
    # Building draws initial weights from the global generator; loading a
    # model must not change the random numbers the caller draws next.
    rng_state = _random.get_state()
    try:
        model.build(tuple(meta["input_shape"]))
    finally:
        _random.set_state(rng_state)
    names = [p.name for p in model.parameters()]
    if names != meta["weights"]:
        raise CheckpointError(f"load_model: {path!r} rebuilds weights {names} but holds {meta['weights']}")
    model.set_weights([arrays[f"weight_{i}"] for i in range(len(names))])
    return model
