"""Lesson 4's character language model (post 004), ``charlm``: its data, its carried state and its sampling.

Everything that is special about a language model lives here: the text corpus
split into ordered batches (:class:`TextData`), the LSTM state carried from
one batch to the next (:class:`CarryState`), and generation
(:func:`sampling_model`, :func:`sample`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy

from .. import data as sn_data
from .. import layers, optimizers
from .. import random as sn_random
from ..backend import to_numpy
from ..callbacks import Callback
from ..model import Sequential
from ..parameters import ParameterStore
from .recipe import Recipe

#: The parameter-store scope of the model's weights (``charlm/lstm/kernel``).
SCOPE = "charlm"
#: The most bytes charlm's vocabulary-sized arrays may take in one training
#: step (2 GiB): the logits, their softmax and their gradient (3 x batch x
#: seq_len x vocabulary numbers), and the embedding and softmax weights with
#: their gradients and Adam's two slots (4 x vocabulary x (embedding + units
#: + 1)). At the lesson's sizes (batches of 100 x 50, embedding 100, LSTM 128)
#: in float32 that allows about 33,000 distinct characters; English text has
#: about 100, and 1.1 million would ask for 65 GiB.
VOCABULARY_BUDGET_BYTES = 2 * 2**30


def check_vocabulary(vocab_size, hp, batch_size, source, itemsize=4, per_symbol=None, name="charlm"):
    """Refuse a vocabulary whose arrays would exceed :data:`VOCABULARY_BUDGET_BYTES`, before any is allocated.

    ``per_symbol``: the weights each vocabulary entry adds (charlm's default: its embedding row, the softmax
    column and bias: ``embedding_size + units + 1``), each kept four times (value, gradient, Adam's slots).
    """
    per_symbol = hp["embedding_size"] + hp["units"] + 1 if per_symbol is None else per_symbol
    need = (3 * batch_size * hp["seq_len"] + 4 * per_symbol) * vocab_size * itemsize
    if need > VOCABULARY_BUDGET_BYTES:
        raise sn_data.DataError(
            f"{name}: {source}: {vocab_size:,} distinct characters would make a training step's logits and weights "
            f"take {need / 2**30:.1f} GiB, more than the {VOCABULARY_BUDGET_BYTES / 2**30:.0f} GiB {name} allows "
            f"(VOCABULARY_BUDGET_BYTES); use a text with fewer distinct characters, or smaller batches"
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

    def __init__(self, corpus, batch_size, seq_len, test_fraction=0.1, name="charlm"):
        cut = int(len(corpus.ids) * (1 - test_fraction))
        self.corpus = corpus
        self.train = sn_data.TextBatches(corpus.ids[:cut], batch_size, seq_len, shuffle=False)
        held = corpus.ids[cut:]
        m = (len(held) - 1) // seq_len
        if m < 1:
            raise ValueError(f"{name} data: the held-out {len(held)} tokens are fewer than one row of seq_len={seq_len} "
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


class CarryState(Callback):
    """The LSTM state carried across batches: reset at each epoch, set aside during evaluation.

    Training batches continue each other's text within an epoch, so the
    state carries over; each epoch starts from zeros. Evaluation starts each
    test batch from zeros and puts the training state back afterwards.

    The state is part of a checkpoint (:class:`scratchnet.Checkpoint` saves a
    stateful layer's ``states``), so a run resumed in the middle of an epoch
    continues from the restored state: the reset happens only when the
    model's step is at the start of an epoch (``steps_per_epoch`` tells).
    """

    def __init__(self, model, steps_per_epoch=None):
        super().__init__()
        self.model = model
        self.steps_per_epoch = steps_per_epoch  # a callable (the recipe knows it once its data is split)
        self._saved = None

    def _stateful(self):
        return [layer for layer in self.model.walk() if getattr(layer, "stateful", False)]

    def on_epoch_begin(self, epoch, logs=None):
        per_epoch = self.steps_per_epoch() if self.steps_per_epoch is not None else None
        if not per_epoch or self.model.step % per_epoch == 0:  # not when resuming mid-epoch
            self.model.reset_states()

    def on_test_begin(self, logs=None):
        self._saved = [layer.states for layer in self._stateful()]

    def on_test_batch_begin(self, batch, logs=None):
        self.model.reset_states()

    def on_test_end(self, logs=None):
        for layer, states in zip(self._stateful(), self._saved or ()):
            layer.states = states
        self._saved = None


def _network(hp, vocab_size, dtype=None):
    return Sequential([
        layers.Embedding(vocab_size, hp["embedding_size"], name="embedding"),
        layers.LSTM(hp["units"], return_sequences=True, stateful=True, name="lstm"),
        layers.Dense(vocab_size, name="softmax"),
    ], name="charlm", dtype=dtype)


class CharLM(Recipe):
    """Lesson 4's language model (post 004): embedding 100, LSTM 128, dense to the vocabulary.

    Sequence loss (mean cross-entropy over every position), Adam 1e-3 with
    global-norm clipping 4.5, batches of 100 x 50 tokens, 10 epochs. The LSTM
    state carries from one batch to the next within an epoch and is reset each
    epoch. One fix from the original: batches are not shuffled, since a carried
    state is only meaningful when batch ``i + 1`` continues the text of batch
    ``i`` (the original shuffles them and carries the state anyway). Weights use
    Keras's initializers rather than the original's ``random_normal`` (stddev 1),
    which starts the softmax saturated. Sample with :func:`sample`.

    Without data, pass ``vocab_size=``.
    """

    name = "charlm"
    hparams = dict(
        embedding_size=100, units=128, seq_len=50,
        optimizer="adam", learning_rate=1e-3, clipnorm=4.5,
        batch_size=100, epochs=10, steps=None, vocab_size=None,
    )

    @classmethod
    def load_data(cls, data=None, test_data=None, fashion=False, validation_size=None, download=True,
                  batch_size=None, progress=True):
        """The text corpus (``data`` names a text file; default: Python's own documentation text)."""
        corpus = sn_data.load_text(data, level="char")
        batch_size = batch_size or cls.hparams["batch_size"]
        cls.check_vocabulary(corpus.vocab_size, cls.hparams, batch_size, corpus.source)
        try:
            return TextData(corpus, batch_size, cls.hparams["seq_len"], name=cls.name)
        except ValueError as e:  # too short for one batch or one held-out row: a data error naming the file
            raise sn_data.DataError(str(e) if corpus.source in str(e) else f"{cls.name} data: {corpus.source}: {e}") \
                from None

    @classmethod
    def check_vocabulary(cls, vocab_size, hp, batch_size, source, itemsize=4):
        """:func:`check_vocabulary` with this model's weights per vocabulary entry."""
        check_vocabulary(vocab_size, hp, batch_size, source, itemsize)

    def make_model(self, hp, dtype):
        if self.data is not None:
            hp["vocab_size"] = self.data.vocab_size
        if hp["vocab_size"] is None:
            raise ValueError("zoo.charlm: pass data= or vocab_size= to size the vocabulary")
        hp["vocab_size"] = int(hp["vocab_size"])
        source = self.data.corpus.source if self.data is not None else "the vocabulary (vocab_size=)"
        self.check_vocabulary(hp["vocab_size"], hp, hp["batch_size"], source, numpy.dtype(dtype or "float32").itemsize)
        # The weights live in a store of their own, so that the sampling model
        # (batch 1, one step) can be built later with the same weights.
        store = ParameterStore()
        with store.scope(SCOPE):
            model = _network(hp, hp["vocab_size"], dtype)
        model.build((None, 1))
        model.parameter_store = store
        self._callbacks = [CarryState(model, steps_per_epoch=lambda: self.steps_per_epoch)]
        return model

    def make_optimizer(self, hp):
        return optimizers.Adam(hp["learning_rate"], global_clipnorm=hp["clipnorm"])

    def count_steps_per_epoch(self):
        return self.data.num_batches if self.data is not None else 1

    def batches(self, start_step=0):
        """Training batches forever, from global step ``start_step``, in text order: ``(epoch, x, y)``."""
        if self.data is None:
            raise ValueError(f"{self.name}: this recipe was built without data; pass data= to build()")
        xs, ys = self.data.train.x, self.data.train.y
        step = start_step
        while True:
            epoch, i = divmod(step, self.steps_per_epoch)
            yield epoch, xs[i], ys[i]
            step += 1

    def callbacks(self):
        return list(self._callbacks)

    def run_info(self):
        corpus = self.data.corpus
        return {"vocab": corpus.vocab, "level": corpus.level}

    @classmethod
    def from_run(cls, run, dtype=None):
        hp = {k: v for k, v in run["hparams"].items() if k in ("embedding_size", "units")}
        return cls(batch_size=run.get("batch_size"), vocab_size=len(run["vocab"]), dtype=dtype, **hp)

    def corpus_of_run(self, run):
        """The vocabulary a training folder recorded, to encode a prime and decode samples."""
        return sn_data.TextCorpus.from_vocab(run["vocab"], run["level"])

    def generate(self, corpus, prime, length, temperature=None, seed=None):
        return sample(self.model, corpus, prime, length, temperature=temperature, seed=seed)

    def count_test(self, y):
        return f"{y.size:,} test tokens"


def sampling_model(model):
    """A batch-1, one-step ``charlm`` that shares ``model``'s weights (post 004's ``infer_sample``).

    It is built in ``model``'s parameter store with ``reuse=True``, as the original
    builds its test model under ``variable_scope(..., reuse=True)``: the same
    :class:`~scratchnet.Parameter` objects, so training moves both, but a
    state of its own, so sampling never disturbs the training state.
    """
    store = getattr(model, "parameter_store", None)
    if store is None:
        raise ValueError("sampling_model: expects a charlm model from sn.zoo.build('charlm', ...)")
    emb, lstm_layer, _ = model.layers
    hp = {"embedding_size": emb.output_dim, "units": lstm_layer.units}
    with store.scope(SCOPE, reuse=True):
        sampler = _network(hp, emb.input_dim, model.dtype)
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
        Encodes the prime and decodes the output
        (``TextCorpus.from_vocab`` rebuilds one from a saved vocabulary).
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
    ids, rng = start_sampling(corpus, prime, temperature, seed)
    sampler = sampling_model(model)
    for i in ids[:-1]:
        sampler(numpy.array([[i]]))
    token, out = ids[-1], []
    for _ in range(length):
        token = next_token(to_numpy(sampler(numpy.array([[token]])))[0, -1], temperature, rng)
        out.append(token)
    return finish_sampling(corpus, prime, out)


def start_sampling(corpus, prime, temperature, seed):
    """The prime's token ids and the generator of the draws, after checking ``temperature`` and ``prime``."""
    if temperature is not None and not temperature > 0:
        raise ValueError(f"sample: temperature must be positive, got {temperature!r}")
    ids = [int(i) for i in corpus.encode(prime)]
    if not ids:
        raise ValueError(f"sample: the prime {prime!r} has no tokens")
    return ids, (numpy.random.default_rng(seed) if seed is not None else sn_random.generator())


def next_token(logits, temperature, rng):
    """The most likely token (``temperature=None``), or a draw from ``softmax(logits / temperature)``."""
    logits = numpy.asarray(logits, dtype=numpy.float64)
    if temperature is None:
        return int(numpy.argmax(logits))
    z = logits / temperature
    p = numpy.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def finish_sampling(corpus, prime, out):
    """``prime`` followed by the decoded tokens ``out`` (a space between words for a word-level corpus)."""
    sep = "" if getattr(corpus, "level", "char") == "char" else " "
    return prime + (sep if out else "") + corpus.decode(out)
