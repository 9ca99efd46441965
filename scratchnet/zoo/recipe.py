"""``Recipe``: everything one zoo model trains with, as data plus small functions.

A recipe holds the model, its loss, its optimizer and schedule, its moving
average (EMA) when the lesson keeps one, and its data. It answers the few
questions the training loop, the CLI, the demo and ``bench/train.py`` ask:

- :meth:`Recipe.batches`: the training batches from a global step on;
- :meth:`Recipe.callbacks`: what the model needs around the loop (a language
  model resets its carried state at each epoch);
- :meth:`Recipe.evaluate`: test metrics, on the moving averages when kept;
- :meth:`Recipe.run_info` / :meth:`Recipe.from_run`: what a training folder
  records to rebuild the model later.

Each zoo model is a subclass that sets :attr:`name` and :attr:`hparams` and
implements :meth:`make_model`, :meth:`make_optimizer` and :meth:`load_data`.
"""
from __future__ import annotations

import copy

from .. import losses, regularizers, training
from ..backend import get_backend
from ..checkpoint import Checkpoint
from ..ema import ExponentialMovingAverage


class Recipe:
    """One zoo model, ready to train.

    Parameters
    ----------
    data : optional
        What :meth:`load_data` returned; without it the recipe still trains
        on arrays given to :meth:`train_step`.
    batch_size : int, optional
        Default: the lesson's.
    seed : int
        Seeds the order of the batches (weights draw from ``scratchnet.random``).
    dtype : {"float32", "float64"}, optional
        The model's dtype (default :func:`scratchnet.floatx`).
    **overrides
        Hyperparameters replacing those of :attr:`hparams`.

    Attributes
    ----------
    model : scratchnet.Model
        Compiled; holds ``.optimizer``, ``.ema`` and ``.step`` (the global step).
    hparams : dict
        The hyperparameters in force.
    steps_per_epoch : int
    """

    #: The zoo name (``scratchnet train NAME``).
    name = None
    #: The lesson's hyperparameters.
    hparams = {}

    def __init__(self, data=None, batch_size=None, seed=0, dtype=None, **overrides):
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            raise ValueError(f"zoo.{self.name}: unknown hyperparameter(s) {unknown}; known: {sorted(self.hparams)}")
        hp = copy.deepcopy(type(self).hparams)
        hp.update(overrides)
        hp["batch_size"] = self.batch_size = int(batch_size or hp["batch_size"])
        self.hparams = hp
        self.data = data
        self.seed = seed
        self.loss = losses.SparseCategoricalCrossentropy(from_logits=True)
        self.model = self.make_model(hp, dtype)
        self.steps_per_epoch = self.count_steps_per_epoch()
        self.optimizer = self.make_optimizer(hp)
        self.ema = self.make_ema(hp)
        self.model.compile(self.optimizer, self.loss, metrics=["accuracy"])
        self.model.ema = self.ema

    # -- what a subclass provides ----------------------------------------------------
    @classmethod
    def load_data(cls, data=None, test_data=None, fashion=False, validation_size=None, download=True,
                  batch_size=None, progress=True):
        """The data this model trains on; ``.train``, ``.test`` and ``.source`` (a line saying what it is)."""
        raise NotImplementedError

    def make_model(self, hp, dtype):
        """The built model."""
        raise NotImplementedError

    def make_optimizer(self, hp):
        raise NotImplementedError

    def count_steps_per_epoch(self):
        raise NotImplementedError

    def batches(self, start_step=0):
        """Training batches forever, from global step ``start_step``: yields ``(epoch, x, y)``."""
        raise NotImplementedError

    def make_ema(self, hp):
        """``tf.train.ExponentialMovingAverage(decay, global_step)`` when the lesson keeps one.

        The average starts fast, ``decay = min(decay, (1 + step) / (10 + step))``,
        and settles to ``decay``.
        """
        if not hp.get("ema_decay"):
            return None
        return ExponentialMovingAverage(hp["ema_decay"], num_updates=lambda: self.model.step)

    def callbacks(self):
        """Callbacks the model needs around the training loop and evaluation (none by default)."""
        return []

    def run_info(self):
        """What a training folder's ``run.json`` records beyond the hyperparameters (none by default)."""
        return {}

    @classmethod
    def from_run(cls, run, dtype=None):
        """The recipe a training folder's ``run.json`` describes, without data (for ``eval`` and ``sample``)."""
        return cls(batch_size=run.get("batch_size"), dtype=dtype)

    # -- shared ------------------------------------------------------------------------
    @property
    def step(self):
        """The global step: training steps taken so far (restored with a checkpoint)."""
        return self.model.step

    def default_steps(self):
        """The lesson's training length in steps."""
        if self.hparams.get("steps"):
            return int(self.hparams["steps"])
        return int(self.hparams["epochs"]) * self.steps_per_epoch

    def train_step(self, x, y):
        """One step of the original's ``train_op``: :meth:`scratchnet.Model.train_on_batch`.

        Returns ``{"loss", "accuracy"}`` on this batch (the loss with the
        regularization penalty, as the originals report it).
        """
        return self.model.train_on_batch(x, y)

    def evaluate(self, x, y, batch_size=250, averaged=True, callbacks=()):
        """Mean loss and accuracy on ``(x, y)`` in inference mode (no dropout).

        With ``averaged`` (the default) a model that keeps moving averages is
        evaluated on them, as the originals' ``average_y`` and ``mnist_eval.py``
        do. ``callbacks`` receive ``on_test_begin``/``on_test_end``.
        """
        if self.ema is not None and averaged:
            with self.ema.averaged(self.model):
                return self.evaluate(x, y, batch_size, averaged=False, callbacks=callbacks)
        n = training.num_examples(x, y)
        batches = ((x[lo:lo + batch_size], y[lo:lo + batch_size]) for lo in range(0, n, batch_size))
        return training.evaluate(self.model, batches, [*self.callbacks(), *callbacks])

    def count_test(self, y):
        """``"10,000 test examples"``: how much a test set of labels ``y`` holds."""
        return f"{len(y):,} test examples"

    def checkpoint(self):
        """A :class:`scratchnet.Checkpoint` of the model, optimizer and EMA."""
        return Checkpoint(model=self.model, optimizer=self.optimizer, ema=self.ema)

    def synchronize(self):
        """Wait for queued device work (timing on the GPU backend)."""
        xp = get_backend().xp
        if xp.__name__ == "cupy":
            xp.cuda.get_current_stream().synchronize()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}: {self.model.count_params():,} parameters, {type(self.optimizer).__name__}>"


def l2(hp):
    """The originals' ``tf.contrib.layers.l2_regularizer(l2)`` = ``l2 * sum(w**2) / 2`` = Keras's ``l2(l2 / 2)``."""
    return regularizers.l2(hp["l2"] / 2) if hp.get("l2") else None
