"""``scratchnet train``: take the folder, validate everything, then train through the one loop.

The order is what keeps a training folder safe:

1. **lock** the folder (creating it if needed) before anything in it is read,
   so that two commands never act on it at once;
2. **check** everything (``run.json``, the flags against what it records, the
   checkpoint to resume from, the data), writing nothing;
3. **write**: move an old run aside (``--overwrite``), write ``run.json``,
   then train. A command that fails in 1 or 2 leaves every file as it found it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys

from .. import callbacks, distributed, training, zoo
from ..folder import FolderError, TrainingFolder, free_space
from ..image_grid import as_images
from .checks import (RunError, TrainingStopped, UsageError, check_checkpoint_file, check_index, check_logdir,
                     check_resumed_flags, check_same_model, load, restore, resume_point, setup)

# What rank 0 decides from the folder and every rank must train with.
_SETTINGS = ("dtype", "batch_size", "data", "validation_size", "fashion", "seed")


def train(args):
    """Train a zoo model through :func:`scratchnet.training.train`; returns the final test metrics.

    Under ``mpiexec -n R`` every rank runs this and trains data-parallel
    (:mod:`scratchnet.distributed`); rank 0 alone takes the folder, writes
    into it and prints.
    """
    distributed.pin_cores()  # under mpiexec: this rank's share of the cores, before any kernel starts its threads
    if getattr(args, "mpi_timeout", None) is not None:
        distributed.set_timeout(args.mpi_timeout)  # before the world connects: its first collectives have it too
    try:
        world = distributed.world()  # under mpiexec: this rank
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
            if world.is_root:
                _lock(folder)  # held until training ends; a second train into the folder is refused
            return _train(sn, args, recipe_class, folder, world)
        except FolderError as e:
            raise UsageError(f"argument --logdir: {e}") from None
        except distributed.DisagreementError as e:  # every rank knows it: each exits 2, rank 0 says why
            if world.is_root:
                print(f"scratchnet {args.command}: error: {e}", file=sys.stderr, flush=True)
            return e.code
        finally:
            folder.release()  # and a folder this command made but never wrote into is removed


def _lock(folder):
    """Take the folder, creating it if it is missing, before anything in it is read or moved."""
    try:
        folder.lock(create=True)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RunError(f"cannot create {folder.path}: {e.strerror} ({free_space(folder.path)} free)") from None
        raise UsageError(f"argument --logdir: {folder.path} cannot be created or opened ({e.strerror or e})") from None


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
    # Every rank must be launched with the same command line (checked before rank 0 changes args from the folder).
    world.agree({f"--{k.replace('_', '-')}": v for k, v in vars(args).items() if k != "func"}, what="the command line")
    if args.resume and args.overwrite:
        raise UsageError("argument --overwrite: not allowed with --resume (continue the run, or move it aside)")
    args.resume = bool(args.resume or args.resume_from)
    # Rank 0 reads the folder (the other ranks may run where it is not); what they need of it is broadcast.
    previous = resume_from = None
    if world.is_root:
        previous = folder.read_run()
        _check_folder(args, folder, previous)
        if args.resume:
            check_resumed_flags(args, previous, logdir)
            resume_from = _resume_from(args, folder)
        args.dtype = _dtype(args, previous)
    if args.seed is None:
        args.seed = 0
    for name, value in world.bcast({name: getattr(args, name) for name in _SETTINGS}).items():
        setattr(args, name, value)
    sn.random.seed(args.seed)
    data = load(args, recipe_class, args.batch_size)
    recipe = recipe_class(data=data, batch_size=args.batch_size, seed=args.seed, dtype=args.dtype)
    if args.steps:
        total = args.steps
    elif args.epochs:
        total = args.epochs * recipe.steps_per_epoch
    else:
        total = recipe.default_steps()
    if world.size > 1:  # the same data on every rank (hashing MNIST takes 0.2 s)
        world.agree({"data": distributed.fingerprint(data), "steps": total}, what="the data")

    restored = False
    if args.resume and world.is_root:  # the other ranks get the restored state from rank 0
        if resume_from is None:
            print(f"resume: no checkpoint in {logdir}; starting from step 0", flush=True)
        else:
            flag = "--resume-from" if args.resume_from else "--resume"
            step = restore(recipe.checkpoint(), resume_from, flag=flag)  # weights, optimizer, EMA, step, RNG
            restored = True
            print(f"resume: restored {resume_from}; continuing from step {step}", flush=True)

    # Everything is checked: from here on, the folder is written, by rank 0 alone, once every rank is here.
    world.barrier()
    if world.is_root:
        _take_folder(args, folder, previous, recipe, data)
    if world.size > 1:
        distributed.DataParallel(recipe.model, world)  # every rank starts from rank 0's state
    return _run(sn, args, recipe, data, total, restored, logdir, world)


# ----------------------------------------------------------------------------
# Checks of the folder (rank 0), before anything is written


def _check_folder(args, folder, previous):
    """Refuse what this command must not do to the folder: train over a run without ``--resume`` or
    ``--overwrite``, move aside a folder that holds no run, or run the demo in a folder it does not own."""
    logdir = folder.path
    if args.command == "demo":
        _check_demo_folder(folder, previous)
        return
    if args.overwrite:
        _check_overwrite(folder)
        return
    check_same_model(previous, args.model, logdir)
    if folder.has_checkpoints() and not args.resume:
        raise UsageError(f"argument --logdir: {logdir} already holds a {(previous or {}).get('model', 'trained')!r} "
                         f"run with checkpoints; continue it with --resume, or pass --overwrite to move it aside "
                         f"to {logdir.rstrip(os.sep)}.old-<time>/")


def _check_overwrite(folder):
    """``--overwrite`` moves aside a training folder, never any other: a source tree is not a run."""
    logdir = folder.path
    if folder.is_empty():
        return
    if not folder.is_training_folder():
        raise UsageError(f"argument --overwrite: {logdir} holds files but no run (no run.json or checkpoints); "
                         f"--overwrite moves aside only a training folder: choose another --logdir")
    here, there = os.path.realpath(os.getcwd()), os.path.realpath(logdir)
    if here == there or here.startswith(there + os.sep):
        raise UsageError(f"argument --overwrite: {logdir} holds the current folder, which cannot be moved aside; "
                         f"run the command from outside it")


def _check_demo_folder(folder, previous):
    """The demo writes only into a folder it owns: a new or empty one, or its own earlier run."""
    logdir = folder.path
    if previous is not None and previous.get("command") != "demo":
        raise UsageError(f"argument --logdir: {logdir} holds a {previous.get('model')!r} run of "
                         f"'scratchnet {previous.get('command', 'train')}', not a demo's; the demo writes only into "
                         f"a new folder or its own: choose another --logdir")
    if previous is None and not folder.is_empty():
        raise UsageError(f"argument --logdir: {logdir} is not empty and holds no demo run; the demo writes only "
                         f"into a new folder or its own: choose another --logdir")


def _resume_from(args, folder):
    """The checkpoint to restore (None: start from step 0), checked before anything is written."""
    check_index(folder, "--resume-from" if args.resume_from else "--resume")  # the next save reads it
    if args.resume_from:
        check_checkpoint_file(args.resume_from)
        return args.resume_from
    return resume_point(folder)


def _dtype(args, previous):
    """The model's dtype: a resumed run keeps the one it recorded."""
    recorded = (previous or {}).get("dtype")
    if not args.resume or recorded is None:
        return args.dtype
    if args.dtype and args.dtype != recorded:
        raise UsageError(f"argument --dtype: {args.logdir} holds a {recorded} run; resume it without --dtype "
                         f"or with --dtype {recorded}")
    return recorded


# ----------------------------------------------------------------------------
# Writing: take the folder, then train


def _take_folder(args, folder, previous, recipe, data):
    """Make the folder this run's, holding its lock: move an old run aside (``--overwrite``) or clear the demo's
    own earlier run, remove what killed saves left, record the owner and write ``run.json``.

    A resumed run keeps the ``run.json`` it continues (its flags were checked against it). A disk that is full
    before the first step is one line naming the folder and its free space; a run moved aside is put back.
    """
    logdir = folder.path
    aside = None
    try:
        if args.command == "demo" and previous is not None:
            kept = folder.remove_run_files()
            print(f"demo: replaced the earlier demo run in {logdir}"
                  + (f" (kept what it did not write: {', '.join(kept)})" if kept else ""), flush=True)
        elif args.overwrite and folder.is_training_folder():
            aside = folder.move_aside()
        stale = folder.remove_stale_temporaries()
        if stale:
            print(f"removed {len(stale)} temporary file(s) left by an interrupted save: {', '.join(stale)}",
                  flush=True)
        folder.claim()
        if not (args.resume and previous is not None):
            folder.write_run(_run_record(args, recipe, data))
    except OSError as e:
        if aside is not None and folder.move_back(aside):
            aside = None
        where = f"; the old run is in {aside}" if aside else ""
        raise RunError(f"cannot write to {logdir}: {e.strerror or e} ({free_space(logdir)} free){where}") from None
    if aside is not None:
        print(f"overwrite: moved the old run aside to {aside}", flush=True)


def _run_record(args, recipe, data):
    """``run.json``: what rebuilds the model, and the flags a ``--resume`` must repeat."""
    return {"model": args.model, "command": args.command, "hparams": recipe.hparams,
            "dtype": recipe.model.dtype.name, "data": data.source, "batch_size": recipe.batch_size,
            "seed": args.seed, "data_path": os.path.abspath(args.data) if args.data else None,
            "fashion": bool(args.fashion), "validation_size": args.validation_size, **recipe.run_info()}


def _run(sn, args, recipe, data, total, restored, logdir, world):
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
        *([_checkpoints(args, logdir, every)] if world.is_root else []),
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
            check_finite=not getattr(args, "allow_nonfinite", False),
        )
    except training.NonFiniteError as e:  # the loop's (a step) or the saver's (a checkpoint): one class
        _close(loggers)
        reason = str(e).removeprefix(f"step {e.step}: ")  # the loop's message starts with its step
        raise TrainingStopped(f"stopped at step {e.step}: {reason}; {_last_checkpoint(logdir)}") from None
    except OSError as e:  # a full disk or an I/O error; what was saved before is intact
        _close(loggers)
        raise RunError(f"{e.strerror if isinstance(e, callbacks.CheckpointWriteError) else e} "
                       f"(in {logdir}, {free_space(logdir)} free)") from None
    if not world.is_root:
        return stop.exit_code or 0
    if stop.signal is not None or recipe.model.stop_training:  # a signal here, or at another rank
        _close(loggers)
        print(f"stopped at step {recipe.step}; continue with --resume", flush=True)
        return stop.exit_code or 0
    final = recipe.evaluate(test_x, test_y, callbacks=loggers)
    _close(loggers)
    print(f"test accuracy after {recipe.step} steps ({weights}, {recipe.count_test(test_y)}): "
          f"{final['accuracy']:.4f}  (loss {final['loss']:.4f})", flush=True)
    print(f"checkpoints, TensorBoard runs (train/, test/) and metrics.csv/.jsonl in {logdir}", flush=True)
    return final


def _close(loggers):
    if loggers:
        loggers[0].close()  # TensorBoard's event files


# ----------------------------------------------------------------------------
# Non-finite values and signals: the interfaces of the loop and the saver


def _checkpoints(args, logdir, every):
    """The ModelCheckpoint callback; with ``--allow-nonfinite`` it saves NaN weights too."""
    return callbacks.ModelCheckpoint(logdir, every_n_steps=every, max_to_keep=args.max_to_keep,
                                     allow_nonfinite=bool(getattr(args, "allow_nonfinite", False)))


def _last_checkpoint(logdir):
    """``"the last finite checkpoint is model-M"``: the newest the index names (a non-finite one is never saved)."""
    from ..checkpoint import latest_checkpoint

    try:
        path = latest_checkpoint(logdir)
    except (ValueError, OSError):
        path = None
    if path is None:
        return "no checkpoint was saved before it"
    return f"the last finite checkpoint is {os.path.basename(path)}"


