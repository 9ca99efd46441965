"""``transformer_lm``: a small causal Transformer character model, beside lesson 4's LSTM (``charlm``).

The same text, the same ordered batches of 100 x 50 characters, the same
optimizer (Adam 1e-3, global-norm clipping 4.5) and about the same number of
weights as ``charlm``, so that the two can be compared step for step (lesson 6).
What differs is the network: learned token and position embeddings, two
pre-norm Transformer blocks with causal self-attention, and a dense layer to
the vocabulary. It keeps no state between batches: each position sees the
positions before it in its own row of 50.
"""
from __future__ import annotations

import numpy

from .. import layers
from ..backend import to_numpy
from ..model import Sequential
from .language_model import CharLM, check_vocabulary, finish_sampling, next_token, start_sampling

def _network(hp, vocab_size, dtype=None):
    blocks = [layers.TransformerBlock(hp["num_heads"], hp["intermediate_dim"], dropout=hp["dropout"], causal=True,
                                      normalize_first=True, name=f"block_{i}") for i in range(hp["num_blocks"])]
    return Sequential([
        layers.TokenAndPositionEmbedding(vocab_size, hp["seq_len"], hp["embedding_dim"], name="embedding"),
        *blocks,
        layers.LayerNormalization(epsilon=1e-5, name="final_norm"),
        layers.Dense(vocab_size, name="softmax"),
    ], name="transformer_lm", dtype=dtype)


class TransformerLM(CharLM):
    """A 2-block causal Transformer over characters: embedding 64, 4 heads, feed-forward 256, pre-norm.

    Sequence loss over every position, Adam 1e-3 with global-norm clipping 4.5,
    batches of 100 x 50 tokens, 10 epochs: ``charlm``'s data and schedule.
    Sample with :meth:`generate` (the last ``seq_len`` tokens are the context).
    """

    name = "transformer_lm"
    hparams = dict(
        embedding_dim=64, num_heads=4, intermediate_dim=256, num_blocks=2, dropout=0.0, seq_len=50,
        optimizer="adam", learning_rate=1e-3, clipnorm=4.5,
        batch_size=100, epochs=10, steps=None, vocab_size=None,
    )

    @classmethod
    def check_vocabulary(cls, vocab_size, hp, batch_size, source, itemsize=4):
        """charlm's check, with this model's weights per vocabulary entry: a token embedding row, a softmax
        column and its bias."""
        check_vocabulary(vocab_size, hp, batch_size, source, itemsize, per_symbol=2 * hp["embedding_dim"] + 1,
                         name=cls.name)

    def make_model(self, hp, dtype):
        if self.data is not None:
            hp["vocab_size"] = self.data.vocab_size
        if hp["vocab_size"] is None:
            raise ValueError("zoo.transformer_lm: pass data= or vocab_size= to size the vocabulary")
        hp["vocab_size"] = int(hp["vocab_size"])
        if hp["embedding_dim"] % hp["num_heads"]:
            raise ValueError(f"zoo.transformer_lm: embedding_dim={hp['embedding_dim']} must be a multiple of "
                             f"num_heads={hp['num_heads']}")
        source = self.data.corpus.source if self.data is not None else "the vocabulary (vocab_size=)"
        self.check_vocabulary(hp["vocab_size"], hp, hp["batch_size"], source, numpy.dtype(dtype or "float32").itemsize)
        model = _network(hp, hp["vocab_size"], dtype)
        model.build((None, 1))
        self._callbacks = []
        return model

    @classmethod
    def from_run(cls, run, dtype=None):
        keys = ("embedding_dim", "num_heads", "intermediate_dim", "num_blocks", "dropout")
        hp = {k: v for k, v in run["hparams"].items() if k in keys}
        return cls(batch_size=run.get("batch_size"), vocab_size=len(run["vocab"]), dtype=dtype, **hp)

    def generate(self, corpus, prime, length, temperature=None, seed=None):
        """``prime`` and ``length`` more tokens: each drawn from the logits at the last position of the context
        (the last ``seq_len`` tokens), the most likely one with ``temperature=None``."""
        ids, rng = start_sampling(corpus, prime, temperature, seed)
        context, out = self.hparams["seq_len"], []
        for _ in range(length):
            window = numpy.array([(ids + out)[-context:]])
            out.append(next_token(to_numpy(self.model(window))[0, -1], temperature, rng))
        return finish_sampling(corpus, prime, out)
