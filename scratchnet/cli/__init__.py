"""The scratchnet command: train, evaluate, sample from and plot the zoo models.

::

    scratchnet train lenet --steps 2000 --logdir runs/lenet       # progress bar, checkpoints, TensorBoard
    scratchnet train lenet --steps 4000 --logdir runs/lenet --resume
    scratchnet eval --logdir runs/lenet --watch 10                 # lesson 2's mnist_eval.py; the model from run.json
    scratchnet train NAME --epochs 1 --logdir runs/lm               # any zoo name (scratchnet train --help)
    scratchnet sample --logdir runs/lm --prime "def " --length 200  # a language model, at temperature 0.8
    scratchnet plot --logdir runs/lenet                            # runs/lenet/curves.png
    scratchnet demo                                                # what `make demo` runs
    scratchnet exercises max_pool                                  # an exercise notebook, opened in Jupyter

A training folder (``--logdir``) holds ``run.json`` (the model, its
hyperparameters, dtype, data, and what the recipe needs to rebuild the
model, such as a vocabulary), the checkpoints ``model-STEP``, the metrics
``metrics.csv``/``metrics.jsonl`` and the TensorBoard runs ``train/`` and
``test/``; ``eval``, ``sample`` and ``plot`` read it back.

Every command checks its arguments before it writes anything: a bad one is a
one-line error naming it, with exit code 2, and every file is left as it was.
``train`` locks the folder first (:mod:`scratchnet.folder`), so that no other
command acts on it meanwhile. ``--resume`` continues from the newest intact
checkpoint (saying so when a newer one is missing) with the flags ``run.json``
records: a flag left out takes the recorded value, one given with another
value is refused. ``demo`` writes only into a new folder or its own.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import distributed, zoo
from .checks import RunError, UsageError, non_negative_int, positive_float, positive_int, temperature
from .commands import DEMO_STEPS, SAMPLE_TEMPERATURE, demo, evaluate, plot, sample
from .exercises import add_parser as add_exercises_parser
from .train import train

__all__ = ["RunError", "UsageError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (``scratchnet train: error: argument --steps: ...``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p, data=True):
    p.add_argument("--backend", default="auto", help="auto (default), numpy, numba or cupy")
    p.add_argument("--seed", type=non_negative_int,
                   help="seeds weights, dropout and shuffling (default 0; a resumed run keeps its own)")
    p.add_argument("--dtype", choices=("float32", "float64"),
                   help="the model's float dtype (default float32; a resumed or evaluated run keeps its own)")
    if data:
        p.add_argument("--data", help="folder with MNIST IDX files (or a text file for a language model); "
                                      "default: search, then download")
        p.add_argument("--test-data", help="folder with the real t10k-* test files, used with the offline 5,000-digit sample")
        p.add_argument("--validation-size", type=non_negative_int,
                       help="training examples held out for validation (default 5,000)")
        p.add_argument("--no-download", action="store_true", help="never try the public mirrors")


def _train_options(p):
    p.add_argument("--mpi-timeout", type=positive_float, metavar="SECONDS",
                   help="under mpiexec: seconds a rank waits for the others at a collective before the job ends, "
                        "naming the rank that stopped answering (default: $SCRATCHNET_MPI_TIMEOUT, else 300)")
    p.add_argument("--steps", type=positive_int, help="training steps (default: the lesson's)")
    p.add_argument("--epochs", type=positive_int, help="training epochs, instead of --steps")
    p.add_argument("--batch-size", type=positive_int, help="default: the lesson's (100)")
    p.add_argument("--checkpoint-every", type=positive_int,
                   help="save a checkpoint every N steps (default: total/5, at most 1000)")
    p.add_argument("--eval-every", type=positive_int, help="log test metrics every N steps (default: as checkpoints)")
    p.add_argument("--eval-examples", type=positive_int, default=2000,
                   help="test examples in each periodic evaluation (default 2,000)")
    p.add_argument("--log-every", type=positive_int, default=10, help="log training metrics every N steps (default 10)")
    p.add_argument("--histograms", type=positive_int, metavar="N",
                   help="TensorBoard histograms of weights, gradients and activations every N steps (default: none)")
    p.add_argument("--max-to-keep", type=positive_int, default=5, help="checkpoints kept (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="keep training when a step produces NaN or Inf (by default training stops at that step, "
                        "naming it, and the last finite checkpoint is kept)")


def build_parser():
    parser = _Parser(prog="scratchnet", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a zoo model")
    p.add_argument("model", choices=zoo.NAMES)
    p.add_argument("--logdir", help="folder for checkpoints and TensorBoard runs (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --logdir")
    p.add_argument("--resume-from", metavar="PATH", help="continue from this checkpoint (e.g. an older intact one)")
    p.add_argument("--overwrite", action="store_true",
                   help="train afresh into a --logdir that holds a run: the old run is moved aside to LOGDIR.old-TIME/")
    p.add_argument("--fashion", action="store_true", default=None,
                   help="Fashion-MNIST instead of MNIST (a resumed run keeps its own)")
    _common(p)
    _train_options(p)
    p.add_argument("--profile", type=positive_int, metavar="N",
                   help="profile N steps after 2 warm-up steps: print where the time goes, op by op, "
                        "and write LOGDIR/trace.json (a Chrome trace)")
    p.set_defaults(func=train)

    p = sub.add_parser("eval", help="evaluate the newest checkpoint (on the moving averages where kept)")
    p.add_argument("model", nargs="?", choices=zoo.NAMES,
                   help="the zoo model (default: the one the folder's run.json records)")
    p.add_argument("--logdir", required=True)
    p.add_argument("--watch", type=positive_float, metavar="SECONDS",
                   help="keep evaluating each new checkpoint, checking every SECONDS")
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="validation (default, as lesson 5's evaluator; test when there is none) or test")
    p.add_argument("--max-evals", type=positive_int, help="with --watch: stop after this many evaluations")
    p.add_argument("--timeout", type=positive_float, help="with --watch: stop after this many seconds")
    p.add_argument("--fashion", action="store_true", default=None,
                   help="Fashion-MNIST instead of MNIST (default: what the run trained on)")
    _common(p)
    p.set_defaults(func=evaluate)

    p = sub.add_parser("sample", help="generate text with a trained language model")
    p.add_argument("--logdir", required=True)
    p.add_argument("--prime", default="The ", help="text to start from")
    p.add_argument("--length", type=positive_int, default=200, help="tokens to generate")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--temperature", type=temperature, default=SAMPLE_TEMPERATURE,
                     help=f"draw each token from softmax(logits / T) (default {SAMPLE_TEMPERATURE}); lower is "
                          f"safer, higher is wilder")
    how.add_argument("--greedy", action="store_true",
                     help="take the most likely token each time instead of sampling (deterministic; a young "
                          "model repeats itself)")
    _common(p, data=False)
    p.set_defaults(func=sample)

    p = sub.add_parser("plot", help="draw the train and test curves of a training folder into a PNG")
    p.add_argument("--logdir", required=True)
    p.add_argument("--out", help="PNG path (default LOGDIR/curves.png)")
    p.set_defaults(func=plot)

    p = sub.add_parser("demo", help=f"train LeNet on real digits for {DEMO_STEPS} steps; checkpoints, logs, plot")
    p.add_argument("--logdir", default="demo-lenet", help="folder it leaves everything in (default demo-lenet)")
    _common(p)
    _train_options(p)
    # The demo must run offline in a few minutes, so it uses only data already
    # on the machine unless asked to try the mirrors.
    p.add_argument("--download", dest="no_download", action="store_false",
                   help="try the public mirrors for full MNIST before falling back to the sample")
    p.set_defaults(func=demo, steps=DEMO_STEPS, checkpoint_every=100, eval_every=50, eval_examples=1000,
                   no_download=True)

    add_exercises_parser(sub)
    return parser


def main(argv=None):
    import signal

    import scratchnet

    if signal.getsignal(signal.SIGINT) is scratchnet._interrupted_while_loading:  # set while the command loaded
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, KeyboardInterrupt is handled below
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad argument (code 2, one line on stderr) or --help (0)
        return e.code
    if args.command == "train" and not args.logdir:
        args.logdir = os.path.join("runs", args.model)
    if args.command == "demo":
        args.fashion = False
    if getattr(args, "seed", 0) is None and args.command != "train":  # train: a resumed run keeps its own
        args.seed = 0
    try:
        result = args.func(args)
    except UsageError as e:
        print(f"scratchnet {args.command}: {e.label}{one_line(str(e))}", file=sys.stderr)
        world = distributed.current_world()
        if world is not None and world.size > 1:
            world.abort(e.code)  # the other ranks would wait for this one forever
        return e.code
    except KeyboardInterrupt:
        # Ctrl-C before training began (or after it ended): the training loop handles it in between.
        saved = "; what was saved before is intact" if args.command in ("train", "demo") else ""
        print(f"scratchnet {args.command}: interrupted{saved}", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def one_line(message):
    """A message on one line: the lines of a multi-line one (a list of problems) joined with ``; ``."""
    parts = [line.strip() for line in message.splitlines() if line.strip()]
    text = parts[0] if parts else ""
    for part in parts[1:]:
        text += (" " if text.endswith(":") else "; ") + part
    return text
