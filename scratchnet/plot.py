"""Training curves: read the TensorBoard runs a training left and draw them.

``scratchnet train`` writes two TensorBoard runs, ``LOGDIR/train`` and
``LOGDIR/test``. :func:`read_scalars` reads their event files back without
TensorBoard (an event file is a sequence of length-prefixed ``Event``
protocol buffers, the TFRecord framing), and :func:`plot_curves` draws one
panel per tag (loss, accuracy, ...) with the train and test curves together,
and says under them why the test curve can sit above the train curve.

matplotlib is an optional extra (``pip install 'scratchnet[plot]'``); it is
imported only when a plot is drawn.
"""
from __future__ import annotations

import glob
import os
import struct
import textwrap

INSTALL_HINT = "scratchnet plot needs matplotlib: pip install 'scratchnet[plot]' (or pip install matplotlib)"
#: Printed under the curves when a folder holds both a train and a test run: the test curve often sits above.
TEST_ABOVE_TRAIN = ("Test above train? A train point is a training batch, measured while training: on the weights of "
                    "that step, with dropout on where the model has it. A test point is measured with dropout off "
                    "and, where the model keeps them, on the moving averages of the weights.")


class MatplotlibMissing(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


class NoScalars(FileNotFoundError):
    """The folder holds no TensorBoard scalars to draw (no ``train/`` or ``test/`` run written yet)."""


def _records(path):
    """Yield the payload of each record of a TFRecord file.

    A record is ``uint64 length | uint32 crc(length) | payload | uint32 crc(payload)``
    (little-endian). The CRCs are not checked: a run still being written may end
    in a partial record, which is skipped.
    """
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if len(header) < 12:
                return
            (length,) = struct.unpack("<Q", header[:8])
            payload = f.read(length)
            if len(f.read(4)) < 4 or len(payload) < length:
                return
            yield payload


def read_scalars(logdir):
    """Every scalar of every run under ``logdir``.

    Returns
    -------
    dict
        ``{run: {tag: [(step, value), ...]}}`` with ``run`` the sub-folder
        (``"train"``, ``"test"``), steps sorted, a step logged twice keeping its
        last value.
    """
    from tensorboardX.proto.event_pb2 import Event

    runs = {}
    for path in sorted(glob.glob(os.path.join(logdir, "*", "events.out.tfevents.*"))):
        run = os.path.basename(os.path.dirname(path))
        tags = runs.setdefault(run, {})
        for payload in _records(path):
            event = Event()
            event.ParseFromString(payload)
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    tags.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
    return {run: {tag: sorted(points.items()) for tag, points in tags.items()} for run, tags in runs.items()}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MatplotlibMissing(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def plot_curves(logdir, path=None, title=None):
    """Draw the train and test curves of ``logdir`` into a PNG.

    Parameters
    ----------
    logdir : str
        A folder holding TensorBoard runs (``train/``, ``test/``).
    path : str, optional
        Where to write the PNG; default ``LOGDIR/curves.png``.
    title : str, optional

    Returns
    -------
    str
        The path written.

    Raises
    ------
    MatplotlibMissing
        matplotlib is not installed.
    NoScalars
        ``logdir`` holds no scalars (a ``FileNotFoundError``).
    """
    plt = _pyplot()
    runs = read_scalars(logdir)
    tags = sorted({tag for tags in runs.values() for tag in tags})
    if not tags:
        raise NoScalars(f"plot: no TensorBoard scalars under {logdir!r} (expected {logdir}/train, {logdir}/test)")
    path = path or os.path.join(logdir, "curves.png")
    fig, axes = plt.subplots(1, len(tags), figsize=(5 * len(tags), 3.8), squeeze=False)
    for ax, tag in zip(axes[0], tags):
        for run in sorted(runs):
            points = runs[run].get(tag)
            if not points:
                continue
            steps, values = zip(*points)
            # A run with one point (a final test) is invisible as a line.
            ax.plot(steps, values, label=run, marker="o" if len(points) < 30 else None)
        ax.set_title(tag)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if {"train", "test"} <= set(runs):
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.1)
        fig.text(0.01, 0.01, textwrap.fill(TEST_ABOVE_TRAIN, 60 * len(tags)), fontsize=8, color="0.3",
                 va="bottom")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
