"""How a training step grows with the batch size and the sequence length, against PyTorch.

For each zoo model at batch 100 and 1,000 (and ``charlm`` at sequence length
50 and 1,000, batch 100), one training step of scratchnet's recipe
(``train_on_batch``: forward, backward, regularizer, optimizer, moving
average) against the same step in PyTorch (``bench/train.py``'s peer), on
random inputs of the right shapes (a step's time does not depend on the
values):

- **time**: the median ms per step, both frameworks in this process, timed in
  alternating blocks of ``--block`` steps (each framework owns a thread
  pool); then the time per example (per token for ``charlm``), which should
  not grow with the batch;
- **memory**: the peak resident set size (RSS) of a fresh process that builds
  the model and takes ``--memory-steps`` steps, one process per framework
  and size, and how far the steps raised it above the RSS after the build
  (the libraries' own footprint, PyTorch's is larger, cancels out there).

::

    python bench/scale.py                     # every model and size
    python bench/scale.py --models lenet,charlm --rounds 4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import alternating_medians, cpu_count, import_peers_first, machine_line, markdown_table  # noqa: E402

VOCAB = 103  # charlm's vocabulary on the default corpus (Python's help topics)
#: (model, batch, sequence length or None)
CONFIGS = [("mlp", 100, None), ("mlp", 1000, None), ("lenet", 100, None), ("lenet", 1000, None),
           ("lstm", 100, None), ("lstm", 1000, None), ("charlm", 100, 50), ("charlm", 100, 1000)]


def _inputs(model, batch, seq, rng):
    if model == "charlm":
        return rng.integers(0, VOCAB, (batch, seq)), rng.integers(0, VOCAB, (batch, seq))
    return rng.random((batch, 784), dtype=np.float32), rng.integers(0, 10, batch)


def scratchnet_step(model, batch, seq):
    """A callable taking one scratchnet training step on fixed random inputs."""
    import scratchnet as sn

    sn.use_backend("numba")
    sn.random.seed(0)
    recipe = sn.zoo.build(model, batch_size=batch, **({"vocab_size": VOCAB} if model == "charlm" else {}))
    x, y = _inputs(model, batch, seq, np.random.default_rng(0))
    return lambda: recipe.train_step(x, y)


def torch_step(model, batch, seq):
    """A callable taking one PyTorch training step (``bench/train.py``'s peer) on fixed random inputs."""
    import torch

    from train import run_torch
    import scratchnet as sn

    torch.set_num_threads(cpu_count())
    x, y = _inputs(model, batch, seq, np.random.default_rng(0))
    hp = dict(sn.zoo.HPARAMS[model], seed=0)

    class Forever:  # run_torch steps through a list of batches; this one never ends
        def __iter__(self):
            while True:
                yield False, x, y

    step, _ = run_torch(model, hp, Forever(), (x, y), 550, VOCAB)
    return step


STEPS = {"scratchnet": scratchnet_step, "torch": torch_step}


def child(framework, model, batch, seq, steps):
    """In a fresh process: build, measure the RSS, take ``steps`` steps; print the RSS figures as JSON."""
    step = STEPS[framework](model, batch, seq)
    built = _status_mb("VmRSS")
    for _ in range(steps):
        step()
    print(json.dumps({"built_mb": built, "peak_mb": _status_mb("VmHWM")}))


def _status_mb(field):
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, in MiB, from /proc/self/status.

    Not ``getrusage``'s ``ru_maxrss``: on Linux a child inherits its parent's at
    fork, and keeps it across exec, so a child of this (large) process would
    report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory(framework, model, batch, seq, steps):
    out = subprocess.run([sys.executable, __file__, "--child", framework, model, str(batch), str(seq or 0), str(steps)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def timing(model, batch, seq, rounds, block, warmup=3):
    """Median ms per step of each framework, in alternating blocks (:func:`common.alternating_medians`)."""
    steps = {fw: make(model, batch, seq) for fw, make in STEPS.items()}
    return alternating_medians(steps, rounds, block, warmup)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mlp,lenet,lstm,charlm")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--block", type=int, default=3, help="steps of one framework per round (default 3)")
    p.add_argument("--memory-steps", type=int, default=3)
    p.add_argument("--child", nargs=5, metavar=("FRAMEWORK", "MODEL", "BATCH", "SEQ", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        fw, model, batch, seq, steps = args.child
        child(fw, model, int(batch), int(seq) or None, int(steps))
        return
    import_peers_first(["torch"])  # before scratchnet loads MKL (kernels/runtime/blas.py)
    from scratchnet.kernels.runtime import blas

    # The memory children run scratchnet alone: on the BLAS the timed steps use here.
    os.environ["SCRATCHNET_BLAS"] = blas.name()
    models = args.models.split(",")
    print(f"Median ms per training step, {args.rounds} alternating rounds of {args.block} steps after 3 warm-up steps; "
          f"peak RSS of a fresh process after {args.memory_steps} steps (its growth over the built model's RSS).\n")
    rows = []
    for model, batch, seq in CONFIGS:
        if model not in models:
            continue
        print(f"  {model} batch {batch}" + (f", sequence {seq}" if seq else ""), file=sys.stderr, flush=True)
        ms = timing(model, batch, seq, args.rounds, args.block)
        mem = {fw: memory(fw, model, batch, seq, args.memory_steps) for fw in STEPS}
        per = batch * (seq or 1)
        unit = "token" if seq else "example"
        growth = {fw: m["peak_mb"] - m["built_mb"] for fw, m in mem.items()}
        rows.append([
            model, batch, seq or "-",
            f"{ms['scratchnet']:.1f}", f"{ms['torch']:.1f}", f"{ms['scratchnet'] / ms['torch']:.2f}x",
            f"{1e3 * ms['scratchnet'] / per:.1f} / {1e3 * ms['torch'] / per:.1f} us per {unit}",
            f"{mem['scratchnet']['peak_mb']:.0f} ({growth['scratchnet']:+.0f})",
            f"{mem['torch']['peak_mb']:.0f} ({growth['torch']:+.0f})",
            f"{mem['scratchnet']['peak_mb'] / mem['torch']['peak_mb']:.2f}x",
        ])
    print(machine_line())
    print(markdown_table(["model", "batch", "seq", "scratchnet ms", "torch ms", "ratio", "time per example (sn / torch)",
                          "scratchnet peak RSS MB (steps)", "torch peak RSS MB (steps)", "RSS ratio"], rows))


if __name__ == "__main__":
    main()
