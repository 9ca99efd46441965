"""Text corpora: vocabularies, encode/decode, and [batch, seq_len] batches with targets shifted by one."""
from __future__ import annotations

import re

import numpy as np
import pytest

from scratchnet.data import DataNotFound, TextBatches, TextCorpus, load_text

TEXT = "thou art more lovely and more temperate: rough winds do shake the darling buds of may."


def test_char_vocabulary_round_trips_the_text():
    corpus = TextCorpus(TEXT, level="char")
    assert corpus.decode(corpus.encode(TEXT)) == TEXT
    assert corpus.decode(corpus.ids) == TEXT
    assert len(corpus) == len(TEXT) and corpus.vocab_size == len(set(TEXT))


def test_vocabulary_puts_the_most_frequent_token_first():
    corpus = TextCorpus("ccc b aa", level="char")
    assert corpus.vocab == ["c", " ", "a", "b"]  # " " and "a" tie at 2: ordered by the token
    assert corpus.index["c"] == 0


def test_word_level_lowercases_drops_punctuation_and_maps_rare_words_to_unk():
    corpus = TextCorpus("The cat, the CAT; the dog!", level="word", min_count=2)
    assert corpus.vocab == ["<unk>", "the", "cat"]
    assert corpus.ids.tolist() == [1, 2, 1, 2, 1, 0]
    assert corpus.encode("the bird cat").tolist() == [1, 0, 2]
    assert corpus.decode([1, 2]) == "the cat"


def test_a_saved_vocabulary_encodes_and_decodes_like_the_corpus_it_came_from():
    corpus = TextCorpus(TEXT, level="word")
    saved = TextCorpus.from_vocab(corpus.vocab, level="word")
    assert saved.encode("thou art lovely").tolist() == corpus.encode("thou art lovely").tolist()
    assert saved.decode(corpus.ids) == corpus.decode(corpus.ids)


def test_unknown_character_and_out_of_range_id_are_errors():
    corpus = TextCorpus("abc")
    with pytest.raises(ValueError, match="encode: character 'z' is not in the vocabulary"):
        corpus.encode("az")
    with pytest.raises(ValueError, match=r"decode: id 3 is outside the vocabulary \[0, 3\)"):
        corpus.decode([0, 3])


def test_batches_have_shape_batch_by_seq_len_and_targets_shifted_by_one():
    corpus = TextCorpus(TEXT)
    batches = corpus.batches(batch_size=3, seq_len=5, shuffle=False)
    row_len = (len(TEXT) - 1) // 3
    assert batches.num_batches == row_len // 5 == len(batches)
    assert batches.x.shape == batches.y.shape == (batches.num_batches, 3, 5)
    ids = corpus.ids
    for k in range(batches.num_batches):
        for i in range(3):
            start = i * row_len + k * 5
            np.testing.assert_array_equal(batches.x[k, i], ids[start:start + 5])
            np.testing.assert_array_equal(batches.y[k, i], ids[start + 1:start + 6])


def test_each_row_continues_in_the_next_batch_so_lstm_state_can_carry_over():
    b = TextBatches(np.arange(100), batch_size=4, seq_len=6, shuffle=False)
    assert b.x[0, 1].tolist() == [24, 25, 26, 27, 28, 29]
    np.testing.assert_array_equal(b.x[1:, :, 0], b.y[:-1, :, -1])
    np.testing.assert_array_equal(b.x[1:, :, 0], b.x[:-1, :, -1] + 1)


def test_the_last_target_of_a_row_is_the_next_token_not_a_wrap_around():
    b = TextBatches(np.arange(11), batch_size=1, seq_len=10, shuffle=False)
    assert b.y[0, 0, -1] == 10  # the cookbook's np.roll would give 0 here


def test_batches_are_reshuffled_every_epoch_and_each_is_seen_once():
    b = TextBatches(np.arange(2001), batch_size=2, seq_len=10, seed=0)
    epochs = [[int(x[0, 0]) for x, _ in b] for _ in range(3)]
    for order in epochs:
        assert sorted(order) == sorted(int(v) for v in b.x[:, 0, 0])
    assert epochs[0] != epochs[1] != epochs[2]
    assert b.epochs_completed == 3
    plain = TextBatches(np.arange(2001), batch_size=2, seq_len=10, shuffle=False)
    assert [int(x[0, 0]) for x, _ in plain] == sorted(int(v) for v in b.x[:, 0, 0])


def test_text_too_short_for_one_batch_is_an_error():
    match = r"10 tokens are too few for one batch of \[batch_size=2, seq_len=5\] \(needs 11\)"
    with pytest.raises(ValueError, match=match):
        TextBatches(np.arange(10), batch_size=2, seq_len=5)


def test_default_corpus_is_pythons_help_text():
    corpus = load_text(level="word")
    assert len(corpus) > 50_000 and corpus.vocab_size > 2_000
    assert corpus.vocab[1] == "the"
    assert "pydoc_data.topics" in corpus.source


def test_any_text_file_can_be_loaded(tmp_path):
    (tmp_path / "sonnet.txt").write_text(TEXT, encoding="utf-8")
    corpus = load_text(tmp_path / "sonnet.txt", level="word")
    assert corpus.decode(corpus.encode("thou art")) == "thou art"
    assert str(tmp_path / "sonnet.txt") in corpus.source


def test_unreadable_or_non_utf8_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt is not utf-8 text"):
        load_text(tmp_path / "latin1.txt")
    with pytest.raises(DataNotFound, match=r"^load_text: .*missing\.txt does not exist; name a utf-8 text file"):
        load_text(tmp_path / "missing.txt")


def test_a_missing_text_file_or_a_folder_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(f"load_text: {tmp_path / 'nope.txt'} does not exist")):
        load_text(tmp_path / "nope.txt")
    with pytest.raises(DataNotFound, match=re.escape(f"load_text: {tmp_path} is a folder, not a text file")):
        load_text(tmp_path)
    with pytest.raises(DataNotFound, match="does not exist"):
        load_text(str(tmp_path / "nope.txt"), level="word")
