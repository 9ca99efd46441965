"""Shape arithmetic shared by the windowed ops (conv2d, max_pool2d) and their kernels.

Notation (NHWC, as in TensorFlow)::

    N, H, W, C   batch, input height, input width, channels
    kh, kw       window (kernel) height and width
    sh, sw       strides along H and W
    OH, OW       output height and width
    pads         (top, bottom, left, right): zeros added around the input

A leaf: it imports nothing from scratchnet, so any op or kernel may use it.
"""
from __future__ import annotations

import numbers


def conv_output_size(x_shape, kh, kw, sh, sw, pads):
    """``(OH, OW)`` of a (kh, kw) window with strides (sh, sw) over padded ``x_shape`` (N, H, W, C).

    ``OH = (H + top + bottom - kh) // sh + 1``: the number of window positions
    whose last row still lies inside the padded input; likewise ``OW``.
    """
    top, bottom, left, right = pads
    _, H, W, _ = x_shape
    return (H + top + bottom - kh) // sh + 1, (W + left + right - kw) // sw + 1


def tf_padding(op, size, k, s, padding, axis="height", shapes=""):
    """Output size and padding along one axis, by TensorFlow's rule.

    ``SAME``: ``out = ceil(size / s)``; the ``max((out-1)*s + k - size, 0)``
    padded entries are split with the extra one at the end (bottom or right).
    ``VALID``: ``out = (size - k) // s + 1``, no padding; a window larger than
    the input is an error (``shapes`` is quoted in its message).

    Returns
    -------
    (out, before, after) : tuple of int
    """
    if padding == "SAME":
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        return out, total // 2, total - total // 2
    if k > size:
        where = f" ({shapes})" if shapes else ""
        raise ValueError(
            f"{op}: the window {axis} {k} is larger than the input {axis} {size} under VALID padding{where}; "
            "use padding='SAME' or a smaller window"
        )
    return (size - k) // s + 1, 0, 0


def tf_padding_2d(op, x_shape, ksize, strides, padding, shapes=""):
    """:func:`tf_padding` for both spatial axes of an NHWC shape.

    Returns
    -------
    (OH, OW, pads) with ``pads = (top, bottom, left, right)``
    """
    _, H, W, _ = x_shape
    (kh, kw), (sh, sw) = ksize, strides
    OH, top, bottom = tf_padding(op, H, kh, sh, padding, "height", shapes)
    OW, left, right = tf_padding(op, W, kw, sw, padding, "width", shapes)
    return OH, OW, (top, bottom, left, right)


def explicit_pads(op, padding):
    """``(top, bottom, left, right)`` from an explicit padding, or None for "SAME" / "VALID".

    Accepted: an int ``p`` (all four sides), a pair ``(ph, pw)`` (top and bottom ``ph``, left and right
    ``pw``), or ``((top, bottom), (left, right))``, every entry a non-negative int (PyTorch's and ONNX's
    explicit padding; TensorFlow writes it as ``[[0, 0], [top, bottom], [left, right], [0, 0]]``).
    """
    if isinstance(padding, str):
        return None
    bad = ValueError(f"{op}: padding must be 'SAME', 'VALID', an int, a pair (ph, pw) or ((top, bottom), "
                     f"(left, right)) of non-negative ints, got {padding!r}")

    def count(v):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
            raise bad
        return int(v)

    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        p = count(padding)
        return (p, p, p, p)
    if not isinstance(padding, (list, tuple)) or len(padding) != 2:
        raise bad
    if all(isinstance(v, (list, tuple)) for v in padding):
        if any(len(v) != 2 for v in padding):
            raise bad
        (top, bottom), (left, right) = padding
        return tuple(count(v) for v in (top, bottom, left, right))
    ph, pw = (count(v) for v in padding)
    return (ph, ph, pw, pw)


def padding_2d(op, x_shape, ksize, strides, padding, shapes=""):
    """``(OH, OW, pads)`` for ``padding`` "SAME" / "VALID" (TensorFlow's rule) or explicit (:func:`explicit_pads`).

    An explicit padding whose windows do not fit (an output of no rows or columns) is an error naming
    the sizes.
    """
    if isinstance(padding, str):
        return tf_padding_2d(op, x_shape, ksize, strides, padding.upper(), shapes)
    pads = explicit_pads(op, padding)
    (kh, kw), (sh, sw) = ksize, strides
    OH, OW = conv_output_size(x_shape, kh, kw, sh, sw, pads)
    if OH < 1 or OW < 1:
        where = f" ({shapes})" if shapes else ""
        raise ValueError(f"{op}: the window {kh}x{kw} does not fit the input {x_shape[1]}x{x_shape[2]} padded by "
                         f"(top, bottom, left, right) = {pads}{where}")
    return OH, OW, pads
