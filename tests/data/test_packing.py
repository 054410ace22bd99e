"""Packing into [C, N_max, ...] with a valid prefix, client choice, and example_batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.data import choose_clients, example_batch, load_federated, pack_images, pack_text


def _assert_packed(arrays):
    valid, n = np.asarray(arrays.valid), np.asarray(arrays.num_examples)
    assert n.dtype == np.int32 and valid.dtype == bool
    np.testing.assert_array_equal(valid.sum(1), n)
    np.testing.assert_array_equal(valid, np.arange(valid.shape[1])[None] < n[:, None])


def test_pack_images_padding_is_zero():
    rng = np.random.default_rng(0)
    xs = [rng.integers(1, 256, (k, 4, 4, 1), dtype=np.uint8) for k in (3, 0, 5)]
    ys = [np.full(len(x), 7, np.int32) for x in xs]
    packed = pack_images(xs, ys)
    assert packed.x.shape == (3, 5, 4, 4, 1) and packed.y.shape == (3, 5)
    _assert_packed(packed)
    np.testing.assert_array_equal(packed.x[0, :3], xs[0])
    assert not packed.x[~packed.valid].any() and not packed.y[~packed.valid].any()


def test_pack_text():
    texts = [np.arange(1, 91, dtype=np.uint8), np.arange(1, 30, dtype=np.uint8)]
    packed = pack_text(texts, seq_len=80)
    assert packed.x.shape == (2, 90) and packed.valid.shape == (2, 10) and packed.y.shape == (2, 0)
    np.testing.assert_array_equal(packed.num_examples, [10, 0])
    _assert_packed(packed)
    assert not packed.x[1, 29:].any()


def test_loaded_data_is_packed(femnist_all, shakespeare_all):
    for d in (femnist_all, shakespeare_all):
        for split in (d.train, d.test):
            _assert_packed(split)
    x, valid = femnist_all.train.x, femnist_all.train.valid
    assert not x[~valid].any()


def test_client_choice_is_a_function_of_seed(femnist_all):
    a = load_federated("femnist", num_clients=20, seed=1)
    b = load_federated("femnist", num_clients=20, seed=1)
    c = load_federated("femnist", num_clients=20, seed=2)
    assert a.client_ids == b.client_ids and a.client_ids != c.client_ids
    assert len(a.client_ids) == 20 and list(a.client_ids) == sorted(a.client_ids)
    i = femnist_all.client_ids.index(a.client_ids[5])
    np.testing.assert_array_equal(a.train.num_examples[5], femnist_all.train.num_examples[i])
    np.testing.assert_array_equal(choose_clients(10, None, 0), np.arange(10))
    with pytest.raises(ValueError, match="num_clients"):
        choose_clients(10, 11, 0)


def test_min_examples_filters(femnist_all):
    d = load_federated("femnist", num_clients=None, seed=0, min_examples=200)
    assert int(d.train.num_examples.min()) >= 200
    assert len(d.client_ids) == int((femnist_all.train.num_examples >= 200).sum())


def test_example_batch_images(femnist_all):
    d = femnist_all
    idx = jnp.array([0, 2, 1], dtype=jnp.int32)
    batch = jax.jit(example_batch, static_argnames=("kind", "seq_len"))
    inputs, labels = batch("images", d.train.x[4], d.train.y[4], idx)
    assert inputs.shape == (3, 28, 28, 1) and inputs.dtype == jnp.float32
    assert labels.dtype == jnp.int32
    np.testing.assert_allclose(inputs, d.train.x[4][np.array(idx)] / np.float32(255.0))
    np.testing.assert_array_equal(labels, d.train.y[4][np.array(idx)])
    assert float(inputs.max()) <= 1.0 and float(inputs.min()) >= 0.0


def test_example_batch_vmaps_over_clients():
    texts = pack_text([np.arange(1, 91, dtype=np.uint8), np.arange(5, 95, dtype=np.uint8)], 80)
    idx = jnp.array([[0, 9], [3, 4]], dtype=jnp.int32)
    inputs, labels = jax.vmap(lambda x, y, i: example_batch("text", x, y, i))(
        texts.x, texts.y, idx)
    assert inputs.shape == (2, 2, 80)
    np.testing.assert_array_equal(inputs[1, 0], np.arange(8, 88))
    np.testing.assert_array_equal(labels, [[81, 90], [88, 89]])


def test_example_batch_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        example_batch("audio", jnp.zeros(3), jnp.zeros(3), jnp.zeros(1, jnp.int32))
