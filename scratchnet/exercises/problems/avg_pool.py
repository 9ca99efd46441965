"""The 2-D average pool's backward, SAME borders included: ``avg_pool_backward(dy, cache) -> dx``."""
from __future__ import annotations

import numpy as np

from ... import ops
from .. import forward
from .base import Case, Exercise, Mistake, _normal


def _pool_op(backward, ksize, strides, padding, forward_pass=forward.avg_pool_forward):
    def avg_pool(x):
        y, cache = forward_pass(x, ksize, strides, padding)
        return y, lambda dy: backward(dy, cache)

    return avg_pool


def _pool_reference(ksize, strides, padding):
    def avg_pool(x):
        return ops.avg_pool2d(x, ksize, strides, padding)

    return avg_pool


def _windows(e):
    """``(oh, ow, rows, cols, count)`` for every window of the case: its slice of x and its real cells."""
    x, (kh, kw), (sh, sw), (top, _, left, _) = e.cache
    _, H, W, _ = x.shape
    _, OH, OW, _ = e.dout["y"].shape
    for oh in range(OH):
        for ow in range(OW):
            r0, c0 = oh * sh - top, ow * sw - left
            rows, cols = slice(max(r0, 0), min(r0 + kh, H)), slice(max(c0, 0), min(c0 + kw, W))
            yield oh, ow, rows, cols, (rows.stop - rows.start) * (cols.stop - cols.start)


def _full_window_divisor(e):
    x, (kh, kw) = e.cache[0], e.cache[1]
    dy, dx = e.dout["y"], np.zeros_like(x)
    for oh, ow, rows, cols, _ in _windows(e):
        dx[:, rows, cols, :] += dy[:, oh:oh + 1, ow:ow + 1, :] / (kh * kw)
    return not e.right_one("dx") and e.close(e.yours["dx"], dx)


def _overlaps_assigned(e):
    """``=`` instead of ``+=``: window by window (the last window wins a shared cell), or offset by offset."""
    x, (kh, kw), (sh, sw), (top, bottom, left, right) = e.cache
    dy = e.dout["y"]
    by_window = np.zeros_like(x)
    for oh, ow, rows, cols, count in _windows(e):
        by_window[:, rows, cols, :] = dy[:, oh:oh + 1, ow:ow + 1, :] / count
    counts = np.ones_like(dy)
    for oh, ow, _, _, count in _windows(e):
        counts[:, oh, ow, :] = count
    N, H, W, C = x.shape
    _, OH, OW, _ = dy.shape
    by_offset = np.zeros((N, H + top + bottom, W + left + right, C))
    for i in range(kh):
        for j in range(kw):
            by_offset[:, i:i + sh * OH:sh, j:j + sw * OW:sw, :] = dy / counts
    by_offset = by_offset[:, top:top + H, left:left + W, :]
    return not e.right_one("dx") and (e.close(e.yours["dx"], by_window) or e.close(e.yours["dx"], by_offset))


def _one_cell_per_window(e):
    """At most one cell of each window receives anything: the max-pool's routing."""
    yours, right = np.asarray(e.yours["dx"]), e.right["dx"]
    dy = e.dout["y"]
    if e.right_one("dx"):
        return False
    nonzero = (np.abs(yours) > 1e-12).sum(axis=(1, 2))  # (N, C)
    windows = dy.shape[1] * dy.shape[2]
    return bool(nonzero.any() and (nonzero <= windows).all() and (nonzero < (np.abs(right) > 1e-12).sum(axis=(1, 2))).all())


AVG_POOL = Exercise(
    name="avg_pool", title="2-D average pooling",
    inputs=("x",), outputs=("y",),
    make_op=_pool_op, make_reference=_pool_reference, forward=forward.avg_pool_forward,
    cases=(
        Case("2x2 window, stride 2, VALID", lambda rng: (_normal(rng, 2, 6, 6, 3),),
             dict(ksize=2, strides=2, padding="VALID")),
        Case("3x3 window, stride 2, SAME on 7x7 (overlapping windows, padded borders)",
             lambda rng: (_normal(rng, 2, 7, 7, 2),), dict(ksize=3, strides=2, padding="SAME"),
             hint=("these windows overlap, and the border ones reach into the padding",
                   "a border window divides by its cells inside x (6 or 4 here, not 9); a cell in two windows "
                   "receives from both")),
        Case("2x2 window, stride 2, SAME on 5x5, a batch of 1 (padding at the bottom and right only)",
             lambda rng: (_normal(rng, 1, 5, 5, 2),), dict(ksize=2, strides=2, padding="SAME"),
             hint=("the last row and column of windows hold 2 (or 1) real cells, not 4",)),
        Case("3x2 window, strides (1, 2), SAME on 4x5 (overlapping rows)", lambda rng: (_normal(rng, 2, 4, 5, 1),),
             dict(ksize=(3, 2), strides=(1, 2), padding="SAME")),
    ),
    hints={"dx": ("each dy entry is spread evenly over the cells its window averaged: the ones inside x",
                  "loop over the output positions (oh, ow); clip the window at the edges of x; count its real "
                  "cells; add (+=) dy / count to each of them",
                  "dx[n, ih, iw, c] = sum over the windows (oh, ow) that hold (ih, iw) of "
                  "dy[n, oh, ow, c] / count[oh, ow], count = the window's cells inside x")},
    mistakes=(
        Mistake("the padded cells are counted: dy divided by kh*kw at the SAME borders", _full_window_divisor,
                ("right away from the borders, wrong on them: a border window's mean divided by the cells inside x "
                 "only (TensorFlow's SAME rule), so its gradient does too",
                 "count the window's rows and columns after clipping them to x: rows * cols, not kh * kw",
                 "dx[window inside x] += dy[n, oh, ow, c] / ((r2 - r1) * (c2 - c1)), r1 = max(oh*sh - top, 0), "
                 "r2 = min(oh*sh - top + kh, H), likewise c1, c2")),
        Mistake("overlapping windows are not summed: = where += belongs", _overlaps_assigned,
                ("a cell read by two overlapping windows moves both outputs, so it receives both gradients; "
                 "yours keeps one of them",
                 "add each window's share into dx (+=) instead of writing it (=)",
                 "dx[:, r1:r2, c1:c2, :] += dy[:, oh:oh+1, ow:ow+1, :] / count")),
        Mistake("the whole gradient goes to one cell of each window, as in max pooling", _one_cell_per_window,
                ("an average has no winner: every cell of the window moves the mean, by 1/count each",
                 "spread dy / count over every real cell of the window, not dy to one cell",
                 "dx[n, ih, iw, c] = sum over the windows holding (ih, iw) of dy[n, oh, ow, c] / count[oh, ow]")),
    ),
)
