"""The start-of-run agreement: every rank must run the same configuration on the same data.

Ranks launched with different arguments do not fail on their own: with a
different ``--steps`` one rank ends early and the others wait for it in a
collective; with a different ``--seed``, ``--data`` or batch size every rank
trains, and the weights silently differ (or the gradients of different
batches are averaged). :meth:`scratchnet.distributed.World.agree` checks it
before the first step::

    world.agree({"model": "lenet", "steps": 1000, "batch_size": 100, "dtype": "float32",
                 "seed": 0, "data": sn.distributed.fingerprint(data)})

Each rank hashes its configuration (:func:`config_digest`: SHA-256 of its
canonical JSON) and the ranks gather the 64-character digests, a few hundred
bytes in all. When they differ, the ranks gather the configurations
themselves and every rank raises the same
:class:`~scratchnet.distributed.DisagreementError`, whose message
(:func:`describe_disagreement`) names each key that differs and which ranks
hold which value.

:func:`fingerprint` stands for the data: the number of examples, the shape
and dtype of each array, and the SHA-256 of its bytes. Two ranks that read
different files, or the same file truncated on one machine, disagree.
"""
from __future__ import annotations

import hashlib
import json

import numpy

from .deadline import ranks_phrase

#: Arrays larger than this are hashed in samples (the first and last 4 MiB and 64 blocks between).
FULL_HASH_BYTES = 256 * 2**20
_SAMPLE_BYTES = 4 * 2**20
_BLOCK_BYTES = 64 * 2**10


def canonical(config):
    """``config`` as plain JSON values (dicts, lists, str, numbers), in its own order: what the ranks exchange."""
    return json.loads(json.dumps(config, default=_plain))


def config_digest(config):
    """SHA-256 (hex) of ``config``'s canonical JSON: the same on two ranks exactly when their configs are equal."""
    text = json.dumps(config, sort_keys=True, default=_plain, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value):
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, numpy.ndarray):
        return array_fingerprint(value)
    return repr(value)


def describe_disagreement(configs, what="the run's configuration", most=4):
    """One line naming each key whose value differs across ``configs`` (one per rank) and the ranks holding each.

    ``{"steps": 10}`` and ``{"steps": 20}`` give ``the ranks disagree on the
    run's configuration: steps is 10 on rank 0 but 20 on rank 1``. Nested
    dicts are compared key by key (``data.train.images``); the first ``most``
    keys that differ are named, in rank 0's order, and the others counted.
    """
    flat = [_flatten(canonical(c)) for c in configs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    parts = []
    for key in keys:
        holders = {}
        for rank, f in enumerate(flat):
            holders.setdefault(_show(f.get(key, _MISSING)), []).append(rank)
        if len(holders) > 1:
            # Rank 0's value first, then the others in order of their lowest rank.
            values = [f"{value} on {ranks_phrase(ranks)}" for value, ranks in holders.items()]
            parts.append(f"{key} is {values[0]} but {' and '.join(values[1:])}")
    if not parts:
        return f"the ranks disagree on {what}"
    more = f"; and {len(parts) - most} more" if len(parts) > most else ""
    return (f"the ranks disagree on {what}: {'; '.join(parts[:most])}{more} "
            f"(every rank must run the same command on the same data)")


_MISSING = object()


def _flatten(config, prefix=""):
    if not isinstance(config, dict):
        return {prefix or "value": config}
    flat = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


def _show(value, width=80):
    if value is _MISSING:
        return "missing"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else f"{text[:width - 3]}..."


def array_fingerprint(array):
    """``"200x28x28 uint8 sha256:1a2b3c4d5e6f7a8b"``: the shape, the dtype and a hash of the bytes.

    Arrays of up to :data:`FULL_HASH_BYTES` are hashed whole (MNIST's 47 MB
    in about 0.1 s); larger ones in samples (the first and last 4 MiB and 64
    blocks of 64 KiB spread between), which still tells apart files of
    different lengths or contents almost always.
    """
    array = numpy.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape} {array.dtype.str}".encode())
    data = array.reshape(-1).view(numpy.uint8)
    if data.size <= FULL_HASH_BYTES:
        digest.update(data)
    else:
        digest.update(data[:_SAMPLE_BYTES])
        digest.update(data[-_SAMPLE_BYTES:])
        for start in numpy.linspace(_SAMPLE_BYTES, data.size - _SAMPLE_BYTES - _BLOCK_BYTES, 64).astype(numpy.int64):
            digest.update(data[start:start + _BLOCK_BYTES])
    shape = "x".join(str(n) for n in array.shape) or "scalar"
    return f"{shape} {array.dtype} sha256:{digest.hexdigest()[:16]}"


def fingerprint(data):
    """A small dict that stands for a data set, to compare across ranks with :meth:`World.agree`.

    ``data`` is what a zoo recipe's ``load_data`` returns (``train``,
    ``validation`` and ``test`` splits, each with ``images`` and ``labels``),
    one such split, a dict of arrays, or an array. Each array becomes
    :func:`array_fingerprint`; a split, ``{"images": ..., "labels": ...}``.
    """
    if isinstance(data, numpy.ndarray):
        return array_fingerprint(data)
    if isinstance(data, dict):
        return {str(k): fingerprint(v) for k, v in data.items()}
    if hasattr(data, "images") and hasattr(data, "labels"):
        return {"images": fingerprint(data.images), "labels": fingerprint(data.labels)}
    splits = {name: getattr(data, name) for name in ("train", "validation", "test") if getattr(data, name, None) is not None}
    if splits:
        return {name: fingerprint(split) for name, split in splits.items()}
    if isinstance(data, (list, tuple)):
        return [fingerprint(v) for v in data]
    return canonical(data)
