"""``scratchnet train``: validate everything, take the folder, then train through the one loop."""
from __future__ import annotations

import contextlib
import os
import sys

from .. import callbacks, distributed, training, zoo
from ..folder import FolderError, TrainingFolder, free_space
from ..image_grid import as_images
from .checks import RunError, UsageError, check_logdir, check_same_model, load, newest_intact, restore, setup


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
        sn = setup(args)
        recipe_class = zoo.recipe_class(args.model)
        logdir = args.logdir
        if world.is_root:
            check_logdir(logdir)
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
        check_same_model(previous, args.model, logdir)
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
    data = load(args, recipe_class, args.batch_size)
    recipe = recipe_class(data=data, batch_size=args.batch_size, seed=args.seed, dtype=dtype)
    if args.steps:
        total = args.steps
    elif args.epochs:
        total = args.epochs * recipe.steps_per_epoch
    else:
        total = recipe.default_steps()

    restored = False
    if args.resume and world.is_root:  # the other ranks get the restored state from rank 0
        path = args.resume_from or newest_intact(folder)
        if path is None:
            print(f"resume: no checkpoint in {logdir}; starting from step 0", flush=True)
        else:
            step = restore(recipe.checkpoint(), path)  # weights, optimizer, EMA, step, RNG
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
        from ..profiler import ProfileSteps

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


