"""Labelled image grids for TensorBoard's IMAGES tab, drawn with NumPy alone.

:func:`prediction_grids` draws test digits with their predicted and true
labels, and the most confident mistakes; :func:`encode_png` turns an
``(H, W, 3)`` uint8 picture into PNG bytes with ``zlib``. Captions use a
built-in 3x5 pixel font, so neither matplotlib nor Pillow is needed.
"""
from __future__ import annotations

import math
import struct
import zlib

import numpy

# A 3x5 pixel font: five rows of three pixels per glyph ("#" lit).
_FONT_ROWS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"), "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"), "3": ("###", "..#", ".##", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"), "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"), "7": ("###", "..#", ".#.", ".#.", ".#."),
    "8": ("###", "#.#", "###", "#.#", "###"), "9": ("###", "#.#", "###", "..#", "###"),
    "/": ("..#", "..#", ".#.", "#..", "#.."), "%": ("#.#", "..#", ".#.", "#..", "#.#"),
    ".": ("...", "...", "...", "...", ".#."), " ": ("...", "...", "...", "...", "..."),
}
FONT = {ch: numpy.array([[c == "#" for c in row] for row in rows]) for ch, rows in _FONT_ROWS.items()}

GREEN, RED, WHITE = (80, 220, 80), (255, 70, 70), (255, 255, 255)
SCALE = 2          # each image pixel and each font pixel is drawn SCALE x SCALE
PAD = 4           # pixels around each cell's image and caption


def as_images(x):
    """``x`` as ``(N, H, W)`` grey images in [0, 1], or None when it does not hold images.

    Images are ``(N, H, W)``, ``(N, H, W, 1)`` or flat square ``(N, H*W)``
    float rows (MNIST's 784); integer data such as token ids is not.
    """
    x = numpy.asarray(x)
    if x.dtype.kind != "f" or x.ndim < 2:
        return None
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side < 8 or side * side != x.shape[1]:
            return None
        x = x.reshape(len(x), side, side)
    if x.ndim != 3:
        return None
    x = x.astype(numpy.float64)
    if x.size and x.max() > 1:
        x = x / 255.0
    return numpy.clip(x, 0.0, 1.0)


def text(caption, color):
    """``caption`` in the 3x5 font: a ``(5 * SCALE, 4 * SCALE * len(caption), 3)`` uint8 strip on black."""
    glyphs = [FONT.get(ch, FONT[" "]) for ch in caption] or [FONT[" "]]
    spaced = [numpy.pad(g, ((0, 0), (0, 1))) for g in glyphs]  # one blank column after each glyph
    mask = numpy.concatenate(spaced, axis=1).repeat(SCALE, 0).repeat(SCALE, 1)
    out = numpy.zeros(mask.shape + (3,), numpy.uint8)
    out[mask] = color
    return out


def grid(images, captions, colors, columns=8):
    """Images with a caption under each, ``columns`` per row: one ``(H, W, 3)`` uint8 picture."""
    n = len(images)
    h, w = images.shape[1] * SCALE, images.shape[2] * SCALE
    cell_h, cell_w = h + 5 * SCALE + 3 * PAD, max(w, max((len(c) * 4 * SCALE for c in captions), default=0)) + 2 * PAD
    rows = max(1, math.ceil(n / columns))
    out = numpy.zeros((rows * cell_h, min(n, columns) * cell_w if n else cell_w, 3), numpy.uint8)
    for i in range(n):
        top, left = (i // columns) * cell_h + PAD, (i % columns) * cell_w + PAD
        grey = (images[i] * 255).astype(numpy.uint8).repeat(SCALE, 0).repeat(SCALE, 1)
        out[top:top + h, left:left + w] = grey[..., None]
        strip = text(captions[i], colors[i])
        out[top + h + PAD:top + h + PAD + strip.shape[0], left:left + strip.shape[1]] = strip
    return out


def prediction_grids(images, labels, logits, count=32, mistakes=16, columns=8):
    """``{"predictions": picture, "confident_mistakes": picture}`` of one evaluation.

    ``predictions``: ``count`` images spread evenly over the examples, captioned ``predicted/true``,
    green when right and red when wrong. ``confident_mistakes``: the wrong
    predictions the model was surest of, captioned ``predicted/true
    probability%`` (left out when there are none).

    Parameters
    ----------
    images : (N, H, W) floats in [0, 1] (:func:`as_images`)
    labels : (N,) int
    logits : (N, K)
    """
    labels = numpy.asarray(labels).reshape(-1).astype(numpy.int64)
    logits = numpy.asarray(logits, dtype=numpy.float64)
    z = numpy.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    predicted = probs.argmax(axis=1)
    # Evenly spread over the examples: a test set sorted by class still shows every class.
    first = numpy.unique(numpy.linspace(0, len(images) - 1, min(count, len(images))).astype(numpy.int64))
    out = {"predictions": grid(images[first], [f"{predicted[i]}/{labels[i]}" for i in first],
                               [GREEN if predicted[i] == labels[i] else RED for i in first], columns)}
    wrong = numpy.flatnonzero(predicted != labels)
    if len(wrong):
        sure = wrong[numpy.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:mistakes]
        captions = [f"{predicted[i]}/{labels[i]} {_percent(probs[i, predicted[i]])}" for i in sure]
        out["confident_mistakes"] = grid(images[sure], captions, [RED] * len(sure), columns)
    return out


def _percent(p):
    """``"87%"`` (at most 99: a sure mistake still reads as not certain); ``"NaN"`` for a model gone non-finite."""
    return f"{min(99, int(100 * p))}%" if numpy.isfinite(p) else "NaN"


def encode_png(picture):
    """PNG bytes of an ``(H, W, 3)`` uint8 RGB picture (8-bit, no filtering, zlib-compressed)."""
    picture = numpy.ascontiguousarray(picture, dtype=numpy.uint8)
    h, w, channels = picture.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    raw = numpy.concatenate([numpy.zeros((h, 1), numpy.uint8), picture.reshape(h, w * channels)], axis=1).tobytes()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
