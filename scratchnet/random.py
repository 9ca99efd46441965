"""The global random number generator.

One ``numpy.random.Generator`` serves everything that draws random numbers
without an explicit seed: dropout masks, weight initializers, shuffling.
Seeding it once makes a whole run reproducible, and its state can be saved in
a checkpoint (``get_state`` returns plain JSON-serialisable data) and restored
with ``set_state`` so that a resumed run draws the same numbers.

The generator always lives on the host. The CPU backends draw dropout masks
from it directly; the GPU backend draws only a 64-bit seed from it per mask
and hashes that on the device (``kernels/cuda/dropout.cu``), so seeding makes a GPU
run repeatable too, but its masks differ from the CPU backends'.
"""
from __future__ import annotations

import numpy

_generator = numpy.random.default_rng()


def seed(s):
    """Reseed the global generator with the integer ``s``; ``None`` draws fresh OS entropy."""
    global _generator
    if s is not None and not isinstance(s, (int, numpy.integer)):
        raise ValueError(f"random.seed: s must be an int or None, got {type(s).__name__}")
    if s is not None and s < 0:
        raise ValueError(f"random.seed: s must be non-negative, got {s}")
    _generator = numpy.random.default_rng(None if s is None else int(s))


def generator():
    """The global ``numpy.random.Generator``."""
    return _generator


def _plain(v):
    # numpy integers are not JSON-serialisable; Python ints of any size are.
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, numpy.integer):
        return int(v)
    if isinstance(v, numpy.ndarray):
        return [_plain(x) for x in v.tolist()]
    return v


def get_state():
    """The generator's state as a JSON-serialisable dict (for checkpoints)."""
    return _plain(_generator.bit_generator.state)


def check_state(d):
    """A new bit generator holding state ``d`` (from :func:`get_state`); the global one is untouched.

    Raises ValueError when ``d`` is not such a state.
    """
    if not isinstance(d, dict) or not isinstance(d.get("bit_generator"), str):
        raise ValueError(f"random.set_state: expected a dict from random.get_state(), got {type(d).__name__}")
    name = d["bit_generator"]
    bit_generator_cls = getattr(numpy.random, name, None)
    if not isinstance(bit_generator_cls, type) or not issubclass(bit_generator_cls, numpy.random.BitGenerator):
        raise ValueError(f"random.set_state: unknown bit generator {name!r}")
    bit_generator = bit_generator_cls()
    try:
        bit_generator.state = d
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise ValueError(f"random.set_state: not a {name} state ({type(e).__name__}: {e})") from None
    return bit_generator


def set_state(d):
    """Restore a state returned by :func:`get_state`; the next draws repeat those after it was taken."""
    global _generator
    _generator = numpy.random.Generator(check_state(d))
