"""Text corpora for language models: vocabulary, encode/decode, ``[batch, seq_len]`` batches.

Follows the TensorFlow cookbook's LSTM text model (seed 004): the text
becomes a stream of ids, cut into batches of ``[batch_size, seq_len]``
inputs whose targets are the same stream shifted by one, and the batch
order is reshuffled every epoch. Unlike the cookbook's ``np.roll`` (whose
last target in each row wraps round to the row's first token) the target
of every position is the token that really follows it.

The default corpus is a real English text that ships with Python: the
help topics of ``pydoc_data.topics`` (about 465,000 characters).
"""
from __future__ import annotations

import collections
import os
import re

import numpy

from ._rng import generator
from .errors import DataNotFound

UNK = "<unk>"
_WORD = re.compile(r"[\w']+")


def default_text():
    """Python's help topics (``pydoc_data.topics``), joined in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def tokenize(text, level):
    """``"char"``: every character; ``"word"``: lower-cased words, punctuation dropped (as the cookbook cleans text)."""
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text.lower())
    raise ValueError(f"tokenize: level must be 'char' or 'word', got {level!r}")


class TextBatches:
    """One corpus cut into ``num_batches`` batches of ``(x, y)``, each ``[batch_size, seq_len]``.

    Row ``i`` of batch ``k + 1`` continues row ``i`` of batch ``k`` in the
    text, so an LSTM can carry its state from batch to batch in stored order
    (as the cookbook does). Iterating yields every batch once per epoch, in a
    fresh random order each time when ``shuffle``.

    Attributes
    ----------
    x, y : ndarray of shape (num_batches, batch_size, seq_len), int64
        ``y[k, i, t]`` is the token after ``x[k, i, t]``.
    """

    def __init__(self, ids, batch_size, seq_len, shuffle=True, seed=None):
        ids = numpy.asarray(ids, dtype=numpy.int64)
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batches: batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        # Each row needs seq_len inputs per batch plus one extra token for
        # the last target.
        row_len = (len(ids) - 1) // batch_size
        num_batches = row_len // seq_len
        if num_batches < 1:
            raise ValueError(
                f"batches: {len(ids)} tokens are too few for one batch of [batch_size={batch_size}, seq_len={seq_len}] "
                f"(needs {batch_size * seq_len + 1})"
            )
        used = num_batches * seq_len
        rows = numpy.stack([ids[i * row_len: i * row_len + used + 1] for i in range(batch_size)])
        # (B, num_batches * T) -> (num_batches, B, T)
        self.x = rows[:, :-1].reshape(batch_size, num_batches, seq_len).transpose(1, 0, 2).copy()
        self.y = rows[:, 1:].reshape(batch_size, num_batches, seq_len).transpose(1, 0, 2).copy()
        self.batch_size, self.seq_len, self.num_batches = batch_size, seq_len, num_batches
        self.shuffle = shuffle
        self.epochs_completed = 0
        self._rng = None if seed is None else numpy.random.default_rng(seed)

    def __len__(self):
        return self.num_batches

    def _order(self):
        if not self.shuffle:
            return numpy.arange(self.num_batches)
        if self._rng is not None:
            return self._rng.permutation(self.num_batches)
        return generator().permutation(self.num_batches)

    def __iter__(self):
        """One epoch: ``(x, y)`` pairs of shape (batch_size, seq_len)."""
        for k in self._order():
            yield self.x[k], self.y[k]
        self.epochs_completed += 1


class TextCorpus:
    """A text as a stream of token ids with its vocabulary.

    Parameters
    ----------
    text : str
    level : {"char", "word"}
    min_count : int
        Tokens seen fewer times map to ``<unk>`` (word level only, where
        ``<unk>`` is id 0, as in the cookbook).
    source : str
        What the text is, for printing.

    Attributes
    ----------
    vocab : list of str
        ``vocab[id]`` is the token; most frequent first (ties by token).
    index : dict
        token -> id.
    ids : ndarray of shape (n_tokens,), int64
    """

    def __init__(self, text, level="char", min_count=1, source="text"):
        if not isinstance(text, str):
            raise TypeError(f"TextCorpus: text must be a str, got {type(text).__name__}")
        tokens = tokenize(text, level)
        if not tokens:
            raise ValueError(f"TextCorpus: {source} has no {level} tokens")
        if level == "char" and min_count != 1:
            raise ValueError("TextCorpus: min_count applies to word level only; every character keeps its id")
        counts = collections.Counter(tokens)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        self.level = level
        self.vocab = ([UNK] if level == "word" else []) + kept
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.ids = self._ids(tokens)
        self.source = f"{source}: {len(tokens):,} {level}s, vocabulary {len(self.vocab):,}"

    @classmethod
    def from_vocab(cls, vocab, level="char"):
        """A corpus with a saved vocabulary and no text, for encoding and decoding when sampling."""
        corpus = cls.__new__(cls)
        corpus.level, corpus.vocab = level, list(vocab)
        corpus.index = {t: i for i, t in enumerate(corpus.vocab)}
        corpus.ids = numpy.zeros(0, dtype=numpy.int64)
        corpus.source = f"saved vocabulary of {len(corpus.vocab):,} {level}s"
        return corpus

    @property
    def vocab_size(self):
        return len(self.vocab)

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return f"TextCorpus({self.source})"

    def _ids(self, tokens):
        if self.level == "word":
            return numpy.array([self.index.get(t, 0) for t in tokens], dtype=numpy.int64)
        try:
            return numpy.array([self.index[t] for t in tokens], dtype=numpy.int64)
        except KeyError as e:
            raise ValueError(
                f"encode: character {e.args[0]!r} is not in the vocabulary ({len(self.vocab)} characters)"
            ) from None

    def encode(self, text):
        """Text -> ids (int64). Unknown words become ``<unk>`` (0); an unknown character is an error."""
        return self._ids(tokenize(text, self.level))

    def decode(self, ids):
        """Ids -> text: characters joined as they are, words with spaces."""
        ids = numpy.asarray(ids).reshape(-1)
        bad = ids[(ids < 0) | (ids >= len(self.vocab))]
        if bad.size:
            raise ValueError(f"decode: id {int(bad[0])} is outside the vocabulary [0, {len(self.vocab)})")
        sep = "" if self.level == "char" else " "
        return sep.join(self.vocab[i] for i in ids.tolist())

    def batches(self, batch_size, seq_len, shuffle=True, seed=None):
        """The corpus as :class:`TextBatches` of ``[batch_size, seq_len]`` with targets shifted by one."""
        return TextBatches(self.ids, batch_size, seq_len, shuffle=shuffle, seed=seed)


def load_text(path=None, level="char", min_count=1, encoding="utf-8"):
    """A :class:`TextCorpus` of a text file, or of Python's help topics when ``path`` is None.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A text file. When given it must exist: there is no fallback to the
        help topics.
    level : {"char", "word"}
    min_count : int
        See :class:`TextCorpus`.
    encoding : str

    Returns
    -------
    TextCorpus
        ``.ids`` of shape (n_tokens,), int64, and ``.vocab``.

    Raises
    ------
    DataNotFound
        ``path`` does not exist or is a folder (a ``FileNotFoundError``).
    ValueError
        ``path`` cannot be read, or is not ``encoding`` text.
    """
    if path is None:
        return TextCorpus(default_text(), level, min_count, source="Python help topics (pydoc_data.topics)")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataNotFound(f"load_text: {path} is a folder, not a text file; name a {encoding} text file")
    if not os.path.exists(path):
        raise DataNotFound(
            f"load_text: {path} does not exist; name a {encoding} text file, or no path for Python's help topics"
        )
    try:
        with open(path, encoding=encoding) as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"load_text: cannot read {path} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"load_text: {path} is not {encoding} text ({e.reason} at byte {e.start})") from None
    return TextCorpus(text, level, min_count, source=path)
