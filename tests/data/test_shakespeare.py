"""Shakespeare with LEAF's construction from the raw Gutenberg text."""

import gzip

import jax
import numpy as np
import pytest

from clipjax.data import example_batch, find_data_file, load_federated, shakespeare

RAW = "shakespeare/shakespeare.txt.gz"


@pytest.fixture(scope="module")
def role_texts():
    with gzip.open(find_data_file(RAW, "shakespeare"), "rt", encoding="latin-1") as f:
        return shakespeare.role_texts(f.read())


def test_vocabulary():
    assert shakespeare.NUM_SYMBOLS == 80
    assert shakespeare.ALL_LETTERS[0] == "\n" and shakespeare.ALL_LETTERS[-1] == "}"
    text = "To be, or not"
    assert shakespeare.decode(shakespeare.encode(text)) == text
    assert list(shakespeare.encode("#~")) == [79, 79]  # LEAF's find() == -1 -> last class


def test_counts(shakespeare_all, role_texts):
    d = shakespeare_all
    assert (d.kind, d.num_classes, d.input_shape, d.seq_len) == ("text", 80, (80,), 80)
    # Before the split: LEAF's paper reports 1,129 roles and 4,226,158 samples.
    assert shakespeare.summary() == {
        "plays": 36, "roles_all": 1_130, "samples_all": 4_226_206,
        "roles": 799, "train": 3_335_127, "test": 771_051, "unknown_characters": 0,
    }
    assert len(d.client_ids) == 799
    assert int(d.train.num_examples.sum()) == 3_335_127
    assert int(d.test.num_examples.sum()) == 771_051
    assert d.train.x.dtype == np.uint8 and d.train.y.shape == (799, 0)
    assert d.train.valid.shape[1] == d.train.x.shape[1] - 80


def test_split_is_leaf_80_20_by_sample_order(shakespeare_all, role_texts):
    d = shakespeare_all
    for c in range(0, len(d.client_ids), 37):
        text = role_texts[d.client_ids[c]]
        n = len(text) - 80
        n_train = max(1, int(0.8 * n))
        assert int(d.train.num_examples[c]) == n_train
        assert int(d.test.num_examples[c]) == n - n_train - 79
        ids = shakespeare.encode(text)
        np.testing.assert_array_equal(d.train.x[c, : n_train + 80], ids[: n_train + 80])
        np.testing.assert_array_equal(d.test.x[c, : len(ids) - n_train - 79], ids[n_train + 79 :])
        assert not d.train.x[c, n_train + 80 :].any()


def test_windows_align_with_raw_text(shakespeare_all, role_texts):
    d = shakespeare_all
    c = d.client_ids.index("THE_TRAGEDY_OF_HAMLET__PRINCE_OF_DENMARK_HAM")
    text = role_texts[d.client_ids[c]]
    idx = np.array([0, 1, 500, int(d.train.num_examples[c]) - 1], dtype=np.int32)
    batch = jax.jit(example_batch, static_argnames=("kind", "seq_len"))
    inputs, labels = batch("text", d.train.x[c], d.train.y[c], idx, seq_len=80)
    assert inputs.shape == (4, 80) and inputs.dtype == np.int32 and labels.dtype == np.int32
    for row, i in enumerate(idx):
        assert shakespeare.decode(inputs[row]) == text[i : i + 80]
        assert shakespeare.ALL_LETTERS[int(labels[row])] == text[i + 80]


def test_parser_rules():
    play = "\n".join([
        "header", "x", "by William Shakespeare", "", "", "", "", "", "", "", "",
        "A PLAY", "", "by William Shakespeare", "",
        "  BOB. Hello there.", "    More from Bob.", "  Alice. Hi.", "  ALICE. Again.",
        "  <<THIS ELECTRONIC VERSION ... WORLD LIBRARY>>", "    still Alice", "",
        "THE COMEDY OF ERRORS", "", "by William Shakespeare", "",
        "ANTIPHOLUS. One.", "two", "<<NOTICE>>", "ignored", "ACT II. SCENE 1.", "ignored too",
        "DROMIO. Three.",
    ] + [""] * 5)
    plays = dict(shakespeare.split_into_plays(play))
    assert plays["A PLAY"] == {"BOB": ["Hello there.", "More from Bob."],
                               "ALICE": ["Hi.", "Again.", "still Alice"]}
    # In the mis-indented Comedy of Errors every line continues a speech (blank ones too; they
    # become spaces that the text normalisation collapses) until a '<' notice or an ACT header.
    assert plays["THE COMEDY OF ERRORS"] == {"ANTIPHOLUS": ["One.", "two"],
                                             "DROMIO": ["Three.", "", "", "", ""]}
    assert shakespeare.client_id("THE TRAGEDY OF HAMLET, PRINCE OF DENMARK", "HAM") == (
        "THE_TRAGEDY_OF_HAMLET__PRINCE_OF_DENMARK_HAM")


def test_split_role_drops_short_roles():
    assert shakespeare.split_role("a" * 81) is None  # one window
    assert shakespeare.split_role("a" * 300) is None  # no window after LEAF's gap
    train, test = shakespeare.split_role("a" * 600)
    assert (len(train) - 80, len(test) - 80) == (416, 520 - 416 - 79)


def test_max_examples_keeps_a_contiguous_block_of_each_large_role():
    full = load_federated("shakespeare", num_clients=10, seed=1)
    cut = load_federated("shakespeare", num_clients=10, seed=1, max_examples=2000)
    assert cut.client_ids == full.client_ids
    n_full, n_cut = full.train.num_examples, cut.train.num_examples
    np.testing.assert_array_equal(n_cut, np.minimum(n_full, 2000))
    assert (n_full > 2000).sum() >= 3  # the check below has large roles to look at
    for c in range(len(n_full)):
        text, block = full.train.x[c, : n_full[c] + 80], cut.train.x[c, : n_cut[c] + 80]
        if n_full[c] <= 2000:
            np.testing.assert_array_equal(block, text)
        else:  # the block occurs in the role's train text, at a seeded offset
            starts = [s for s in range(n_full[c] - 2000 + 1) if text[s] == block[0]
                                and np.array_equal(text[s:s + len(block)], block)]
            assert starts, f"client {c}: the kept windows are not a block of its train text"
    np.testing.assert_array_equal(cut.test.x, full.test.x)  # test data is never cut


def test_max_examples_is_checked():
    with pytest.raises(ValueError, match="max_examples must be a non-negative integer"):
        load_federated("shakespeare", num_clients=2, seed=0, max_examples=-1)
    with pytest.raises(ValueError, match="set data.max_examples=0"):
        load_federated("cifar10", num_clients=2, seed=0, max_examples=10)
