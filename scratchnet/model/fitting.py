"""``fit``'s arguments, checked before the first step: verbosity, the held-out split, the validation data."""
from __future__ import annotations

import math
import numbers

import numpy

from .. import training


def check_verbose(op, verbose):
    """Keras's ``verbose``: 0 (silent), 1 (a progress bar), 2 (one line per epoch), or ``"auto"`` (1); as an int."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, numpy.bool_)) or (isinstance(verbose, (int, numpy.integer)) and verbose in (0, 1, 2)):
        return int(verbose)
    raise ValueError(f"{op}: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")


def hold_out(x, y, validation_split, validation_data):
    """``(x, y, validation_data)`` with the last ``validation_split`` of the examples held out, as Keras does.

    Keras trains on the first ``ceil(n * (1 - split))`` examples, before any
    shuffling, so the held-out ones are the same every epoch.
    """
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) \
            or not 0 <= validation_split < 1:
        raise ValueError(f"fit: validation_split must be a number in [0, 1), got {validation_split!r}")
    if not validation_split:
        return x, y, validation_data
    if validation_data is not None:
        raise ValueError("fit: give validation_data or validation_split, not both")
    n = training.num_examples(x)
    split_at = math.ceil(n * (1 - validation_split))
    if split_at == n:
        raise ValueError(f"fit: validation_split={validation_split!r} of {n} examples leaves no example to validate on")
    head, tail = training.take(x, slice(None, split_at)), training.take(x, slice(split_at, None))
    return head, y[:split_at], (tail, y[split_at:])


def check_validation_data(validation_data, x, y):
    """``(x_val, y_val)``, checked before training rather than at the end of the first epoch."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        got = (f"a {type(validation_data).__name__} of {len(validation_data)}"
               if isinstance(validation_data, (tuple, list)) else type(validation_data).__name__)
        raise ValueError(f"fit: validation_data must be a pair (x_val, y_val), got {got}")
    x_val, y_val = validation_data
    n = training.num_examples(x_val)
    if len(y_val) != n:
        raise ValueError(f"fit: validation_data: x_val and y_val must have the same number of examples, "
                         f"got {n} and {len(y_val)}")
    if n == 0:
        raise ValueError("fit: validation_data holds no examples")
    for name, train, val in (("x", x, x_val), ("y", y, y_val)):
        want, got = per_example(train), per_example(val)
        if want != got:
            raise ValueError(f"fit: validation_data: {name}_val must have {name}'s shape per example {want}, got {got}")
    return x_val, y_val


def per_example(a):
    """The shape of one example of ``a``; a trailing axis of 1 (labels as ``(N, 1)``) does not count.
    For a list of inputs, the list of their shapes."""
    if training.input_list(a):
        return [per_example(t) for t in a]
    shape = tuple(numpy.shape(a)[1:])
    return shape[:-1] if shape and shape[-1] == 1 else shape


def epochs_of(batches, steps_per_epoch):
    """The batches relabelled: epoch ``i`` is batches ``i * steps_per_epoch`` to ``(i + 1) * steps_per_epoch - 1``."""
    for i, (_, x, y) in enumerate(batches):
        yield i // steps_per_epoch, x, y
