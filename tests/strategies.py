"""Hypothesis strategies for the kernels' inputs: shapes, memory layouts, windows, paddings, dtypes.

As MiniTorch's ``tests/strategies.py`` does, these draw not only sizes but
how an array lies in memory, since that is where compiled kernels go wrong:
a kernel that walks a buffer as if it were C-contiguous is right on every
array NumPy makes fresh, and wrong on a transposed or sliced one. So every
array these strategies give is a *view* in one of :data:`LAYOUTS`:

``contiguous``  a fresh C-ordered array
``fortran``     column-major (every stride reversed)
``permuted``    made with its axes in a drawn order, then transposed back
``stepped``     every other element of a larger buffer along some axes (``a[::2]``)
``offset``      a larger buffer without its first row along some axes (``a[1:]``)
``reversed``    negative strides along some axes (``a[::-1]``)

The values do not depend on the layout: the same seed gives the same numbers
in any of them (:func:`lay_out`), so a test compares a kernel on the view
with the reference on a contiguous copy. Hypothesis shrinks a failure to
the first layout (``contiguous``) and to the smallest sides it can.

:func:`arrays` gives NumPy arrays; :func:`laid` gives the values and the
layout apart (a :class:`Laid`), so that a test makes the array where the
backend wants it (``.on(cupy)``: a transfer to a GPU would make a contiguous
copy) and keeps the values to give the reference. In ``@given``
(``tests/test_kernels_properties.py``)::

    @given(case=conv_cases(), dtype=dtypes(), data=st.data())
    def test_...(case, dtype, data):
        x = data.draw(laid(case.x_shape, dtype), label="x")
        x_numba, x_reference = x.on(np), x.values
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

DTYPES = (np.float64, np.float32)
LAYOUTS = ("contiguous", "fortran", "permuted", "stepped", "offset", "reversed")
PADDINGS = ("VALID", "SAME")


# --- scalars --------------------------------------------------------------------------------------

def dtypes():
    """float64 or float32 (float64 first: a failure shrinks to it)."""
    return st.sampled_from(DTYPES)


def sides(min_value=1, max_value=6):
    """One dimension's size."""
    return st.integers(min_value, max_value)


def seeds():
    """A seed for ``np.random.default_rng``: the numbers of an array, drawn cheaply."""
    return st.integers(0, 2**32 - 1)


def paddings():
    """TensorFlow's padding names, ``"VALID"`` and ``"SAME"``."""
    return st.sampled_from(PADDINGS)


def windows(max_side=4):
    """A pooling or convolution window ``(kh, kw)``, not always square."""
    return st.tuples(sides(1, max_side), sides(1, max_side))


def strides_2d(max_side=3):
    """Strides ``(sh, sw)``, not always equal (and not always smaller than the window)."""
    return st.tuples(sides(1, max_side), sides(1, max_side))


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=6):
    """A shape: ``min_dims`` to ``max_dims`` sides in ``[min_side, max_side]``."""
    return st.lists(sides(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


# --- layouts and arrays ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """How an array lies in memory: one of :data:`LAYOUTS`, with its axis order or the axes it touches."""

    kind: str
    perm: tuple = ()  # "permuted": the order the buffer's axes were made in
    axes: tuple = ()  # "stepped", "offset", "reversed": the axes sliced


@st.composite
def layouts(draw, ndim):
    """A :class:`Layout` for an array of rank ``ndim`` (``contiguous`` alone for a scalar)."""
    kind = draw(st.sampled_from(LAYOUTS if ndim else LAYOUTS[:1]))
    if kind == "permuted":
        return Layout(kind, perm=tuple(draw(st.permutations(range(ndim)))))
    if kind in ("stepped", "offset", "reversed"):
        axes = draw(st.sets(st.integers(0, ndim - 1), min_size=1, max_size=ndim))
        return Layout(kind, axes=tuple(sorted(axes)))
    return Layout(kind)


def lay_out(values, layout, xp=np):
    """The same values as ``values`` (host), as an array of module ``xp`` (numpy, cupy) laid out as ``layout`` says.

    The layout is made where the array lives: a transfer to a GPU would make a contiguous copy.
    """
    values = xp.array(np.ascontiguousarray(values))  # a copy, always: a kernel may update it in place
    if layout.kind == "contiguous":
        return values
    if layout.kind == "fortran":
        return xp.asfortranarray(values)
    if layout.kind == "permuted":
        buffer = xp.ascontiguousarray(values.transpose(layout.perm))
        return buffer.transpose(tuple(int(d) for d in np.argsort(layout.perm)))
    if layout.kind == "reversed":
        index = tuple(slice(None, None, -1) if d in layout.axes else slice(None) for d in range(values.ndim))
        return xp.ascontiguousarray(values[index])[index]
    step, start = (2, 0) if layout.kind == "stepped" else (1, 1)
    big_shape = tuple(start + n * step if d in layout.axes else n for d, n in enumerate(values.shape))
    # The gaps hold NaN (-1 in an integer array): a kernel that reads them poisons its output.
    fill = np.nan if values.dtype.kind == "f" else -1
    buffer = xp.full(big_shape, fill, dtype=values.dtype)
    index = tuple(slice(start, None, step) if d in layout.axes else slice(None) for d in range(values.ndim))
    buffer[index] = values
    return buffer[index]


def random_values(seed, shape, dtype, kind="normal"):
    """Host values, C-contiguous: ``"normal"`` (standard normal) or ``"ties"`` (many equal values, zeros among them)."""
    rng = np.random.default_rng(seed)
    if kind == "ties":
        return rng.integers(-1, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@dataclass(frozen=True, eq=False)
class Laid:
    """Drawn values (host, C-contiguous) and the layout to give them: ``.on(xp)`` makes the array."""

    values: np.ndarray
    layout: Layout

    def on(self, xp=np):
        """The array, of module ``xp`` (numpy or cupy), laid out in memory as drawn."""
        return lay_out(self.values, self.layout, xp)


@st.composite
def laid(draw, shape, dtype, kinds=("normal",)):
    """A :class:`Laid` float array of ``shape`` and ``dtype``: values of one of ``kinds``
    (:func:`random_values`), and a layout."""
    kind = draw(st.sampled_from(kinds))
    return Laid(random_values(draw(seeds()), shape, dtype, kind), draw(layouts(len(shape))))


@st.composite
def laid_ints(draw, shape, high, dtype=np.int64):
    """A :class:`Laid` integer array in ``[0, high)`` (class ids, token ids) of ``shape``; repeats likely."""
    rng = np.random.default_rng(draw(seeds()))
    return Laid(rng.integers(0, high, size=shape).astype(dtype), draw(layouts(len(shape))))


def arrays(shape, dtype, kinds=("normal",)):
    """A NumPy float array of ``shape`` and ``dtype`` in a drawn layout (:func:`laid`, made on the host)."""
    return laid(shape, dtype, kinds).map(Laid.on)


# --- the cases of each op family ------------------------------------------------------------------

@dataclass(frozen=True)
class DenseCase:
    N: int
    C: int
    K: int


@st.composite
def dense_cases(draw, max_side=9):
    """``x (N, C) @ w (C, K)``: sizes either side of a SIMD width, down to 1."""
    return DenseCase(*(draw(sides(1, max_side)) for _ in range(3)))


@dataclass(frozen=True)
class WindowCase:
    """A window sliding over an NHWC image: a convolution (``O`` output channels) or a pool (``O`` unused)."""

    N: int
    H: int
    W: int
    C: int
    O: int
    window: tuple
    strides: tuple
    padding: str

    @property
    def x_shape(self):
        return (self.N, self.H, self.W, self.C)

    @property
    def w_shape(self):
        return (*self.window, self.C, self.O)


@st.composite
def window_cases(draw, max_side=8, max_channels=4, max_window=4, max_stride=3, batch=3):
    """An image, a window, strides and a padding. Under ``"VALID"`` the image is at least the window;
    under ``"SAME"`` the window may be larger than the image."""
    kh, kw = draw(windows(max_window))
    padding = draw(paddings())
    low_h, low_w = (kh, kw) if padding == "VALID" else (1, 1)
    H = draw(sides(low_h, max(low_h, max_side)))
    W = draw(sides(low_w, max(low_w, max_side)))
    return WindowCase(
        N=draw(sides(1, batch)), H=H, W=W, C=draw(sides(1, max_channels)), O=draw(sides(1, max_channels)),
        window=(kh, kw), strides=draw(strides_2d(max_stride)), padding=padding,
    )


def conv_cases(**kwargs):
    """A convolution: :func:`window_cases`, ``O`` output channels, ``w`` of ``(kh, kw, C, O)`` (HWIO)."""
    return window_cases(**kwargs)


def pool_cases(**kwargs):
    """A pool: :func:`window_cases` (``O`` unused)."""
    return window_cases(**kwargs)


@st.composite
def winograd_cases(draw):
    """A convolution the Numba backend's Winograd takes: float32, 5x5, stride 1, at least 8 channels in and out."""
    padding = draw(paddings())
    low = 5 if padding == "VALID" else 1
    return WindowCase(
        N=draw(sides(1, 2)), H=draw(sides(low, 11)), W=draw(sides(low, 11)), C=draw(sides(8, 10)),
        O=draw(sides(8, 10)), window=(5, 5), strides=(1, 1), padding=padding,
    )


@dataclass(frozen=True)
class SequenceCase:
    """An LSTM over ``(N, T, D)`` with ``H`` units; ``V`` rows of an embedding table when it looks ids up."""

    N: int
    T: int
    D: int
    H: int
    V: int


@st.composite
def sequence_cases(draw, max_batch=4, max_steps=5, max_features=5, max_units=5, max_vocab=7):
    return SequenceCase(
        N=draw(sides(1, max_batch)), T=draw(sides(1, max_steps)), D=draw(sides(1, max_features)),
        H=draw(sides(1, max_units)), V=draw(sides(1, max_vocab)),
    )
