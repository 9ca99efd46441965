"""The model zoo: the four models of the seed tutorials, ready to train.

Each entry is a :class:`Recipe`: the model, its loss, its optimizer and
learning-rate schedule, its moving average (EMA) when the tutorial keeps one,
the data it trains on, and one training step. ``scratchnet train``, the demo
and ``bench/train.py`` all train through a recipe, so there is one definition
of each model.

==========  ==========================================================  =====================
name        model                                                       seed tutorial
==========  ==========================================================  =====================
``mlp``     784-500-10 ReLU, SGD + exponential decay, L2, EMA           002 (TF book ch. 5)
``lenet``   conv 5x5x32, pool, conv 5x5x64, pool, FC 512, dropout, FC   003 (TF book ch. 6.4)
``lstm``    28 rows as 28 steps, 3 x LSTM 256 + dropout, FC 10, Adam    001, 000
``charlm``  embedding, LSTM 128, dense to the vocabulary, Adam + clip   004 (TF cookbook 9.3)
==========  ==========================================================  =====================

The defaults are the seeds' hyperparameters (:data:`HPARAMS`), except where a
seed's advice is known to be wrong; each such fix is stated in the model's
docstring. Every MNIST model takes flat ``(N, 784)`` rows and returns
``(N, 10)`` logits; ``charlm`` takes ``(N, T)`` token ids and returns
``(N, T, V)`` logits.

Usage::

    import scratchnet as sn
    data = sn.models.load_data("mlp")
    recipe = sn.models.build("mlp", data=data)
    for step, (epoch, x, y) in zip(range(1000), recipe.batches()):
        logs = recipe.train_step(x, y)
    print(recipe.evaluate(data.test.images, data.test.labels))   # on the EMA weights
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy

from . import backend, initializers, layers, losses, optimizers, regularizers, schedules
from . import data as sn_data
from . import random as sn_random
from .checkpoint import Checkpoint
from .ema import ExponentialMovingAverage
from .model import ParameterStore, Sequential

NAMES = ("mlp", "lenet", "lstm", "charlm")

#: The seeds' hyperparameters. ``l2`` is in the seeds' sense,
#: ``tf.contrib.layers.l2_regularizer(l2)`` = ``l2 * sum(w**2) / 2``, which is
#: Keras's (and scratchnet's) ``l2(l2 / 2)``. ``steps`` is the seed's training
#: length; ``charlm`` trains for ``epochs`` instead.
HPARAMS = {
    "mlp": dict(
        hidden=500, init_stddev=0.1, bias_init=0.1,
        optimizer="sgd", learning_rate=0.8, decay_rate=0.99, l2=1e-4, ema_decay=0.99,
        batch_size=100, steps=30000,
    ),
    "lenet": dict(
        conv1=32, conv2=64, kernel_size=5, fc=512, dropout=0.5, init_stddev=0.1,
        optimizer="sgd", learning_rate=0.01, decay_rate=0.99, l2=1e-4, ema_decay=0.99,
        batch_size=100, steps=30000,
    ),
    "lstm": dict(
        units=256, layers=3, dropout=0.5, init_stddev=0.1,
        optimizer="adam", learning_rate=1e-3,
        batch_size=100, steps=2000,
    ),
    "charlm": dict(
        embedding_size=100, units=128, seq_len=50,
        optimizer="adam", learning_rate=1e-3, clipnorm=4.5,
        batch_size=100, epochs=10, steps=None,
    ),
}

#: Training examples in MNIST's train split (``read_data_sets``' 55,000), for
#: the learning-rate decay when a recipe is built without data.
MNIST_TRAIN_SIZE = 55000


# ----------------------------------------------------------------------------
# Data


def load_data(name, data=None, test_data=None, fashion=False, validation_size=None, download=True,
              batch_size=None, seq_len=None, progress=True):
    """The data zoo model ``name`` trains on.

    MNIST models get :func:`scratchnet.data.load_mnist`'s splits; when full
    MNIST is not found and cannot be downloaded, they fall back to the
    5,000-digit sample (tested on ``test_data`` when given) and the returned
    ``.source`` says so. ``charlm`` gets the text corpus.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    data : str, optional
        Folder with the IDX files (MNIST) or a text file (``charlm``).
    test_data : str, optional
        Folder with the real ``t10k-*`` files, used when only the sample is available.
    fashion : bool
        Fashion-MNIST instead of MNIST (no offline fallback).
    validation_size : int, optional
        Examples held out of the training file (default: the loader's 5,000).
    download : bool
        Try the public mirrors when the files are not on disk.
    batch_size, seq_len : int, optional
        ``charlm`` batching (default: :data:`HPARAMS`).
    progress : bool
        Progress bars for downloads.

    Returns
    -------
    Data set object with ``.train``, ``.test`` (``.validation`` for MNIST) and
    ``.source``, a line saying which data this is and how many examples.
    """
    _check_name(name)
    if name == "charlm":
        hp = HPARAMS["charlm"]
        corpus = sn_data.load_text(data, level="char")
        return TextData(corpus, batch_size or hp["batch_size"], seq_len or hp["seq_len"])
    return sn_data.load_mnist(
        data, kind="fashion" if fashion else "mnist", validation_size=validation_size, download=download,
        allow_sample=not fashion, test_path=test_data, progress=progress,
    )


@dataclass
class Split:
    """Examples and labels of one split, named as :class:`scratchnet.data.DataSet` names them."""

    images: numpy.ndarray
    labels: numpy.ndarray

    @property
    def num_examples(self):
        return len(self.images)

    def __len__(self):
        return len(self.images)


class TextData:
    """A text corpus split for ``charlm``: ordered training batches and held-out test rows.

    The last ``test_fraction`` of the token stream is held out. Training
    batches (:class:`scratchnet.data.TextBatches`, not shuffled) are
    ``[batch_size, seq_len]`` and row ``i`` of batch ``k + 1`` continues row
    ``i`` of batch ``k``; the test split is the held-out stream cut into
    ``(M, seq_len)`` rows with targets shifted by one.
    """

    def __init__(self, corpus, batch_size, seq_len, test_fraction=0.1):
        cut = int(len(corpus.ids) * (1 - test_fraction))
        self.corpus = corpus
        self.train = sn_data.TextBatches(corpus.ids[:cut], batch_size, seq_len, shuffle=False)
        held = corpus.ids[cut:]
        m = (len(held) - 1) // seq_len
        if m < 1:
            raise ValueError(f"charlm data: the held-out {len(held)} tokens are fewer than one row of seq_len={seq_len} "
                             f"({corpus.source}); use a longer text or a shorter seq_len")
        self.test = Split(held[:m * seq_len].reshape(m, seq_len), held[1:m * seq_len + 1].reshape(m, seq_len))
        self.source = (f"{corpus.source}; train {cut:,} tokens in {self.train.num_batches} batches of "
                       f"[{batch_size}, {seq_len}], test {m * seq_len:,} held-out tokens")

    @property
    def vocab_size(self):
        return self.corpus.vocab_size

    @property
    def num_batches(self):
        return self.train.num_batches

    def train_batches(self):
        """``(x, y)``, each of shape (num_batches, batch_size, seq_len), in text order."""
        return self.train.x, self.train.y


# ----------------------------------------------------------------------------
# The recipe: model + loss + optimizer + EMA + data + one training step


class Recipe:
    """Everything one zoo model trains with.

    Attributes
    ----------
    name : str
    hparams : dict
        The hyperparameters in force (the seed's, with any overrides).
    model : scratchnet.Model
        Holds ``.optimizer``, ``.ema`` and ``.step`` (the global step).
    loss : scratchnet.losses.SparseCategoricalCrossentropy
    optimizer : scratchnet.optimizers.Optimizer
    ema : scratchnet.ExponentialMovingAverage or None
    data : the data set object from :func:`load_data`, or None
    batch_size : int
    steps_per_epoch : int
    """

    def __init__(self, name, hparams, model, loss, optimizer, ema=None, data=None, batch_size=100,
                 steps_per_epoch=1, seed=0):
        self.name = name
        self.hparams = hparams
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.ema = ema
        self.data = data
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        model.compile(optimizer, loss, metrics=["accuracy"])
        model.ema = ema

    # -- training --------------------------------------------------------

    @property
    def step(self):
        """The global step: training steps taken so far (restored with a checkpoint)."""
        return self.model.step

    def default_steps(self):
        """The seed's training length in steps."""
        if self.hparams.get("steps"):
            return int(self.hparams["steps"])
        return int(self.hparams["epochs"]) * self.steps_per_epoch

    def train_step(self, x, y):
        """One step of the seeds' ``train_op``: forward, loss + L2, backprop, update, EMA.

        This is :meth:`scratchnet.Model.train_on_batch`; the model was compiled
        with the recipe's optimizer and loss, and steps its EMA (whose
        ``num_updates`` is the global step) after each update.

        Parameters
        ----------
        x : array of shape (N, 784), or (N, T) token ids for ``charlm``
        y : int array of shape (N,), or (N, T) for ``charlm``

        Returns
        -------
        dict
            ``loss`` (cross-entropy plus the regularization loss, as the seeds
            report it) and ``accuracy`` on this batch, as Python floats.
        """
        return self.model.train_on_batch(x, y)

    def batches(self, start_step=0):
        """Training batches forever, from global step ``start_step``: yields ``(epoch, x, y)``.

        MNIST models draw each epoch's order from ``(seed, epoch)``, so a run
        resumed at step ``s`` sees exactly the batches the killed run would
        have seen. ``charlm`` keeps the corpus order: its LSTM state carries
        from one batch to the next within an epoch.
        """
        if self.data is None:
            raise ValueError(f"{self.name}: this recipe was built without data; pass data= to build()")
        step = start_step
        if self.name == "charlm":
            xs, ys = self.data.train_batches()
            while True:
                epoch, i = divmod(step, self.steps_per_epoch)
                yield epoch, xs[i], ys[i]
                step += 1
        images, labels = self.data.train.images, self.data.train.labels
        B = self.batch_size
        while True:
            epoch, i = divmod(step, self.steps_per_epoch)
            order = numpy.random.default_rng([self.seed, epoch]).permutation(len(images))
            idx = order[i * B:(i + 1) * B]
            yield epoch, images[idx], labels[idx]
            step += 1

    def _stateful(self):
        return [layer for layer in self.model.layers if getattr(layer, "stateful", False)]

    def reset_state(self):
        """Forget the LSTM state carried between batches (``charlm``); a no-op for the others."""
        self.model.reset_states()

    def save_state(self):
        """The carried state, to put back with :meth:`restore_state`."""
        return [layer.states for layer in self._stateful()]

    def restore_state(self, saved):
        for layer, states in zip(self._stateful(), saved):
            layer.states = states

    def synchronize(self):
        """Wait for queued device work (timing on the GPU backend)."""
        xp = backend.get_backend().xp
        if xp.__name__ == "cupy":
            xp.cuda.get_current_stream().synchronize()

    # -- evaluation ------------------------------------------------------

    def evaluate(self, x, y, batch_size=250, averaged=True):
        """Mean loss and accuracy on ``(x, y)`` in inference mode (no dropout).

        With ``averaged`` (the default) a model that keeps moving averages is
        evaluated on them, as the seeds' ``average_y`` and ``mnist_eval.py`` do.
        ``charlm`` starts each batch from a zero state, and the state it
        carries for training is put back afterwards. The loss includes the
        regularization penalty, as the training loss does.
        """
        if self.ema is not None and averaged:
            with self.ema.averaged(self.model):
                return self.evaluate(x, y, batch_size, averaged=False)
        carried = self.save_state()
        totals, n = {}, len(x)
        for lo in range(0, n, batch_size):
            self.reset_state()
            logs = self.model.test_on_batch(x[lo:lo + batch_size], y[lo:lo + batch_size])
            k = min(batch_size, n - lo)
            for key, v in logs.items():
                totals[key] = totals.get(key, 0.0) + v * k
        self.restore_state(carried)
        return {key: v / n for key, v in totals.items()}

    def checkpoint(self):
        """A :class:`scratchnet.Checkpoint` of the model, optimizer and EMA."""
        return Checkpoint(model=self.model, optimizer=self.optimizer, ema=self.ema)

    def __repr__(self):
        return f"<Recipe {self.name}: {self.model.count_params():,} parameters, {type(self.optimizer).__name__}>"


# ----------------------------------------------------------------------------
# The four models


def _check_name(name):
    if name not in NAMES:
        raise ValueError(f"models: unknown model {name!r}; choose one of {', '.join(NAMES)}")


def _hparams(name, overrides):
    hp = copy.deepcopy(HPARAMS[name])
    unknown = sorted(set(overrides) - set(hp))
    if unknown:
        raise ValueError(f"models.{name}: unknown hyperparameter(s) {unknown}; known: {sorted(hp)}")
    hp.update(overrides)
    return hp


def _l2(hp):
    return regularizers.l2(hp["l2"] / 2) if hp.get("l2") else None


def _sgd_with_decay(hp, steps_per_epoch):
    # tf.train.exponential_decay(base, global_step, num_examples / BATCH_SIZE, decay):
    # the rate falls by decay_rate once per epoch, smoothly (not staircase).
    schedule = schedules.ExponentialDecay(hp["learning_rate"], steps_per_epoch, hp["decay_rate"])
    return optimizers.SGD(schedule)


def _ema(hp, model):
    if not hp.get("ema_decay"):
        return None
    # tf.train.ExponentialMovingAverage(decay, global_step): the average starts
    # fast, decay = min(decay, (1 + step) / (10 + step)), and settles to decay.
    return ExponentialMovingAverage(hp["ema_decay"], num_updates=lambda: model.step)


def mlp_model(hp):
    """784-500-10 with ReLU; truncated-normal(0.1) weights, L2 on both weight matrices (seed 002)."""
    tn = initializers.truncated_normal(stddev=hp["init_stddev"])
    bias = initializers.constant(hp["bias_init"])
    return Sequential([
        layers.Dense(hp["hidden"], activation="relu", kernel_initializer=tn, bias_initializer=bias,
                     kernel_regularizer=_l2(hp), name="layer1"),
        layers.Dense(10, kernel_initializer=tn, bias_initializer=bias, kernel_regularizer=_l2(hp), name="layer2"),
    ], name="mlp")


def lenet_model(hp):
    """The TF book's LeNet-5 variant (seed 003): two SAME 5x5 convs with 2x2 SAME pools, FC 512, FC 10.

    L2 sits on the last layer only (the seed's second fix).
    """
    tn = initializers.truncated_normal(stddev=hp["init_stddev"])
    k = hp["kernel_size"]
    return Sequential([
        layers.Reshape((28, 28, 1)),
        layers.Conv2D(hp["conv1"], k, padding="same", activation="relu", kernel_initializer=tn, name="layer1-conv1"),
        layers.MaxPool2D(2, 2, padding="same", name="layer2-pool1"),
        layers.Conv2D(hp["conv2"], k, padding="same", activation="relu", kernel_initializer=tn, name="layer3-conv2"),
        layers.MaxPool2D(2, 2, padding="same", name="layer4-pool2"),
        layers.Flatten(),
        layers.Dense(hp["fc"], activation="relu", kernel_initializer=tn,
                     bias_initializer=initializers.constant(0.1), name="layer5-fc1"),
        layers.Dropout(hp["dropout"]),
        layers.Dense(10, kernel_initializer=tn, bias_initializer=initializers.constant(0.1),
                     kernel_regularizer=_l2(hp), name="layer6-fc2"),
    ], name="lenet")


def lstm_model(hp):
    """28 image rows as 28 time steps through stacked LSTMs, each output dropped out (seed 001).

    ``DropoutWrapper(cell, output_keep_prob=0.5)`` on every cell is a
    :class:`~scratchnet.layers.Dropout` (rate 0.5) after every LSTM layer; the
    last layer returns its last step only (``output[:, -1, :]``).
    """
    stack = [layers.Reshape((28, 28))]
    for i in range(hp["layers"]):
        last = i == hp["layers"] - 1
        stack += [
            layers.LSTM(hp["units"], return_sequences=not last, name=f"lstm{i + 1}"),
            layers.Dropout(hp["dropout"]),
        ]
    stack.append(layers.Dense(10, kernel_initializer=initializers.truncated_normal(stddev=hp["init_stddev"]),
                              bias_initializer=initializers.constant(0.1), name="output"))
    return Sequential(stack, name="lstm")


def charlm_model(hp, vocab_size):
    """Embedding, LSTM carrying its state from batch to batch, dense to the vocabulary (seed 004)."""
    return Sequential([
        layers.Embedding(vocab_size, hp["embedding_size"], name="embedding"),
        layers.LSTM(hp["units"], return_sequences=True, stateful=True, name="lstm"),
        layers.Dense(vocab_size, name="softmax"),
    ], name="charlm")


def build(name, data=None, batch_size=None, seed=0, **overrides):
    """The :class:`Recipe` of zoo model ``name``.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    data : optional
        What :func:`load_data` returned. Without it the recipe can still
        train on arrays given to :meth:`Recipe.train_step`; MNIST models then
        size their learning-rate decay for 55,000 examples, and ``charlm``
        needs ``vocab_size=``.
    batch_size : int, optional
        Default: the seed's (100).
    seed : int
        Seeds the shuffling of the batches (weights draw from
        ``scratchnet.random``; seed that for repeatable weights).
    **overrides
        Hyperparameters replacing those of :data:`HPARAMS` (``vocab_size`` for
        a ``charlm`` built without data).

    Returns
    -------
    Recipe
    """
    _check_name(name)

    vocab_size = overrides.pop("vocab_size", None)
    hp = _hparams(name, overrides)
    B = batch_size or hp["batch_size"]
    hp["batch_size"] = B
    loss = losses.SparseCategoricalCrossentropy(from_logits=True)
    if name == "charlm":
        if data is not None:
            vocab_size = data.vocab_size
        if vocab_size is None:
            raise ValueError("models.charlm: pass data= or vocab_size= to size the vocabulary")
        hp["vocab_size"] = int(vocab_size)
        # The weights live in a store of their own, so that the sampling model
        # (batch 1, one step) can be built later with the same weights.
        store = ParameterStore()
        with store.scope("charlm"):
            model = charlm_model(hp, vocab_size)
        model.build((None, 1))
        model.parameter_store = store
        optimizer = optimizers.Adam(hp["learning_rate"], global_clipnorm=hp["clipnorm"])
        steps_per_epoch = data.num_batches if data is not None else 1
        return Recipe(name, hp, model, loss, optimizer, None, data, B, steps_per_epoch, seed)
    train_size = data.train.num_examples if data is not None else MNIST_TRAIN_SIZE
    steps_per_epoch = max(1, train_size // B)
    if name == "mlp":
        model, optimizer = mlp_model(hp), _sgd_with_decay(hp, train_size / B)
    elif name == "lenet":
        model, optimizer = lenet_model(hp), _sgd_with_decay(hp, train_size / B)
    else:
        model, optimizer = lstm_model(hp), optimizers.Adam(hp["learning_rate"])
    model.build((None, 784))
    return Recipe(name, hp, model, loss, optimizer, _ema(hp, model), data, B, steps_per_epoch, seed)


def mlp(data=None, **kwargs):
    """Seed 002's MNIST MLP: 784-500-10 ReLU.

    SGD with ``ExponentialDecay(0.8, one epoch of steps, 0.99)``, L2 1e-4 in the
    seed's sense (``tf.contrib.layers.l2_regularizer(1e-4)``, i.e.
    ``sn.regularizers.l2(5e-5)``) on both weight matrices, EMA 0.99 with
    ``num_updates`` = global step, evaluated on the averaged weights.
    Batch 100, 30,000 steps; the seed reaches 98.4% test accuracy.
    """
    return build("mlp", data, **kwargs)


def lenet(data=None, **kwargs):
    """Seed 003's LeNet-5: conv 5x5x32 SAME, max-pool 2x2 SAME, conv 5x5x64 SAME, max-pool, FC 512, dropout 0.5, FC 10.

    Two fixes from the seed: the base learning rate is 0.01, not the book's
    0.8, which diverges; and L2 (1e-4, seed sense) is on the last layer only.
    SGD with exponential decay 0.99 per epoch, EMA 0.99, batch 100.
    """
    return build("lenet", data, **kwargs)


def lstm(data=None, **kwargs):
    """Seed 001's MNIST LSTM: 28 rows as time steps, 3 LSTM layers of 256, output dropout keep 0.5, FC 10.

    Adam 1e-3, batch 100, 2,000 steps. Training and evaluation run the same
    model object, so they share every weight (seed 000's point), and dropout
    acts only with ``training=True``.
    """
    return build("lstm", data, **kwargs)


def charlm(data=None, **kwargs):
    """Seed 004's language model: embedding 100, LSTM 128, dense to the vocabulary.

    Sequence loss (mean cross-entropy over every position), Adam 1e-3 with
    global-norm clipping 4.5, batches of 100 x 50 tokens, 10 epochs. The LSTM
    state carries from one batch to the next within an epoch and is reset each
    epoch. One fix from the seed: batches are not shuffled, since a carried
    state is only meaningful when batch ``i + 1`` continues the text of batch
    ``i`` (the seed shuffles them and carries the state anyway). Weights use
    Keras's initializers rather than the seed's ``random_normal`` (stddev 1),
    which starts the softmax saturated. Sample with :func:`sample`.
    """
    return build("charlm", data, **kwargs)


# ----------------------------------------------------------------------------
# Sampling


def sampling_model(model):
    """A batch-1, one-step ``charlm`` that shares ``model``'s weights (seed 004's ``infer_sample``).

    It is built in ``model``'s parameter store with ``reuse=True``, as the seed
    builds its test model under ``variable_scope(..., reuse=True)``: the same
    :class:`~scratchnet.Parameter` objects, so training moves both, but a
    state of its own, so sampling never disturbs the training state.
    """
    store = getattr(model, "parameter_store", None)
    if store is None:
        raise ValueError("sampling_model: expects a charlm model from sn.models.build('charlm', ...)")
    emb, lstm_layer, _ = model.layers
    hp = {"embedding_size": emb.output_dim, "units": lstm_layer.units}
    with store.scope("charlm", reuse=True):
        sampler = charlm_model(hp, emb.input_dim)
    sampler.build((1, 1))
    return sampler


def sample(model, corpus, prime, length, temperature=None, seed=None):
    """Generate ``length`` tokens after ``prime`` with a trained ``charlm``.

    The prime text is fed one token at a time to build up the state; then each
    step feeds the last token and picks the next: the most likely one
    (``temperature=None``, deterministic), or a draw from
    ``softmax(logits / temperature)``.

    Parameters
    ----------
    model : the ``charlm`` model (``recipe.model``)
    corpus : scratchnet.data.TextCorpus
        (``TextCorpus.from_vocab`` rebuilds one from a saved vocabulary)
        Encodes the prime and decodes the output.
    prime : str
        At least one token.
    length : int
    temperature : float, optional
        Above 1 flattens the distribution, below 1 sharpens it.
    seed : int, optional
        Seeds the draws (``None``: ``scratchnet.random.generator()``).

    Returns
    -------
    str
        ``prime`` followed by the generated text.
    """
    if temperature is not None and not temperature > 0:
        raise ValueError(f"sample: temperature must be positive, got {temperature!r}")
    ids = [int(i) for i in corpus.encode(prime)]
    if not ids:
        raise ValueError(f"sample: the prime {prime!r} has no tokens")
    rng = numpy.random.default_rng(seed) if seed is not None else sn_random.generator()
    sampler = sampling_model(model)
    for i in ids[:-1]:
        sampler(numpy.array([[i]]))
    token, out = ids[-1], []
    for _ in range(length):
        logits = backend.to_numpy(sampler(numpy.array([[token]])))[0, -1].astype(numpy.float64)
        if temperature is None:
            token = int(numpy.argmax(logits))
        else:
            z = logits / temperature
            p = numpy.exp(z - z.max())
            token = int(rng.choice(len(p), p=p / p.sum()))
        out.append(token)
    sep = "" if getattr(corpus, "level", "char") == "char" else " "
    return prime + (sep if out else "") + corpus.decode(out)
