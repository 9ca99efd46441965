"""Text corpora for language models: vocabulary, encode/decode, ``[batch, seq_len]`` batches.

Follows the TensorFlow cookbook's LSTM text model (lesson 4, post 004): the text
becomes a stream of ids, cut into batches of ``[batch_size, seq_len]``
inputs whose targets are the same stream shifted by one, and the batch
order is reshuffled every epoch. Unlike the cookbook's ``np.roll`` (whose
last target in each row wraps round to the row's first token) the target
of every position is the token that really follows it.

The default corpus is a real English text that ships with Python: the
help topics of ``pydoc_data.topics`` (about 465,000 characters).

A text file is read in bounded chunks up to :data:`MAX_TEXT_BYTES`, and a
vocabulary may hold at most :data:`MAX_VOCABULARY` tokens: a small or
endless input (``/dev/zero``) fails with a :class:`DataError` naming the
file, not by exhausting memory.
"""
from __future__ import annotations

import collections
import os
import re
import stat

import numpy

from ._rng import generator
from .errors import DataError, DataNotFound

UNK = "<unk>"
_WORD = re.compile(r"[\w']+")

#: The largest text file :func:`load_text` reads (64 MiB; pass ``max_bytes=``
#: to change it). Twelve times Shakespeare's complete works (5.4 MB), the
#: corpus of lesson 4's cookbook; a character-level load takes about 24
#: bytes of memory a character, so about 1.5 GiB at the cap. A file, pipe or
#: device (``/dev/zero``) that holds more is refused after reading at most
#: this plus one byte.
MAX_TEXT_BYTES = 64 * 2**20
#: The most distinct tokens a vocabulary may hold (65,536). Real alphabets
#: are far smaller (English text about 100 characters, Chinese about
#: 10,000); more is binary data or random text. Each token costs a row of a
#: model's embedding and a column of its softmax: at 1.1 million distinct
#: characters charlm's logits alone would take 20 GiB.
MAX_VOCABULARY = 65_536
#: Bytes read at a time (1 MiB).
CHUNK_BYTES = 2**20


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
            raise DataError(
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
        What the text is (a file name), for printing and for error messages.
    max_vocabulary : int, optional
        The most distinct tokens kept (default :data:`MAX_VOCABULARY`); a
        text with more is a :class:`DataError` naming it and the count.

    Attributes
    ----------
    vocab : list of str
        ``vocab[id]`` is the token; most frequent first (ties by token).
    index : dict
        token -> id.
    ids : ndarray of shape (n_tokens,), int64
    """

    def __init__(self, text, level="char", min_count=1, source="text", max_vocabulary=None):
        if not isinstance(text, str):
            raise TypeError(f"TextCorpus: text must be a str, got {type(text).__name__}")
        tokens = text if level == "char" else tokenize(text, level)
        if not tokens:
            raise DataError(f"TextCorpus: {source} has no {level} tokens")
        if level == "char" and min_count != 1:
            raise ValueError("TextCorpus: min_count applies to word level only; every character keeps its id")
        cap = MAX_VOCABULARY if max_vocabulary is None else max_vocabulary
        self.level = level
        if level == "char":
            self.vocab, self.ids = _char_vocabulary(text, source, cap)
        else:
            counts = collections.Counter(tokens)
            kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
            _check_vocabulary(len(kept), cap, source, "word", hint=f"; raise min_count (now {min_count})")
            self.vocab = [UNK] + kept
        self.index = {t: i for i, t in enumerate(self.vocab)}
        if level == "word":
            self.ids = self._ids(tokens)
        self.source = f"{source}: {len(tokens):,} {level}s, vocabulary {len(self.vocab):,}"

    @classmethod
    def from_vocab(cls, vocab, level="char"):
        """A corpus with a saved vocabulary and no text, for encoding and decoding when sampling."""
        _check_vocabulary(len(vocab), MAX_VOCABULARY, "the saved vocabulary", level)
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


def _char_vocabulary(text, source, max_vocabulary):
    """``(vocab, ids)`` of a text's characters: most frequent first, ties by character.

    Counted with NumPy over the code points (about 24 bytes of memory a
    character at the peak, and no Python object per character); the number
    of distinct characters is checked against ``max_vocabulary`` before the
    vocabulary is built.
    """
    codes = numpy.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    counts = numpy.bincount(codes)
    present = numpy.flatnonzero(counts)
    _check_vocabulary(len(present), max_vocabulary, source, "char")
    order = present[numpy.lexsort((present, -counts[present]))]
    id_of = numpy.zeros(len(counts), dtype=numpy.int64)
    id_of[order] = numpy.arange(len(order))
    return [chr(c) for c in order.tolist()], id_of[codes]


def _check_vocabulary(size, max_vocabulary, source, level, hint=""):
    """Refuse ``size`` distinct tokens beyond the cap, before a vocabulary (and a model) is sized by them."""
    if size > max_vocabulary:
        raise DataError(f"TextCorpus: {source} has {size:,} distinct {level}s, more than the {max_vocabulary:,} "
                        f"a vocabulary may hold (MAX_VOCABULARY){hint}; is it text?")


def _read_text(path, encoding, max_bytes):
    """The text of ``path``: at most ``max_bytes`` bytes, read a chunk at a time, then decoded."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
                raise DataError(f"load_text: {path} holds {info.st_size:,} bytes, more than the {max_bytes:,} "
                                f"a text may have (max_bytes)")
            data = bytearray()
            while len(data) <= max_bytes:
                chunk = f.read(min(CHUNK_BYTES, max_bytes + 1 - len(data)))
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise DataError(f"load_text: cannot read {path} ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise DataError(f"load_text: {path} goes on past {max_bytes:,} bytes, the most a text may have "
                        f"(max_bytes); reading stopped there (a device or a pipe that does not end?)")
    if not data:
        raise DataError(f"load_text: {path} is empty; name a {encoding} text file")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"load_text: {path} is not {encoding} text ({e.reason} at byte {e.start})") from None


def load_text(path=None, level="char", min_count=1, encoding="utf-8", max_bytes=None):
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
    max_bytes : int, optional
        The largest file read (default :data:`MAX_TEXT_BYTES`); a larger
        file, or a pipe or device that goes on longer, is refused.

    Returns
    -------
    TextCorpus
        ``.ids`` of shape (n_tokens,), int64, and ``.vocab``.

    Raises
    ------
    DataNotFound
        ``path`` does not exist or is a folder (a ``FileNotFoundError``).
    DataError
        ``path`` cannot be read, is empty, is larger than ``max_bytes``, is
        not ``encoding`` text, or has more than :data:`MAX_VOCABULARY`
        distinct tokens (a ``ValueError``).
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
    text = _read_text(path, encoding, MAX_TEXT_BYTES if max_bytes is None else max_bytes)
    return TextCorpus(text, level, min_count, source=path)
