"""CIFAR-10 from the image-folder zip (prepared once into the tfds cache) and its partitions."""

import numpy as np
import pytest

from clipjax.data import cifar10, label_skew, load_federated

# The first preparation decodes 60,000 JPEGs (about 35 s on 2 busy cores); later runs reuse the
# tfds cache (about 2 s per load).


def test_counts(cifar10_arrays):
    (x_train, y_train), (x_test, y_test) = cifar10_arrays
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y_train), [5_000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1_000] * 10)
    assert 100 < x_train.mean() < 150  # real photographs, not blank


def test_zip_order_and_labels():
    names = ["train/cat/0001.jpg", "test/dog/0000.jpg", "train/airplane/0000.jpg"]
    members = cifar10.zip_members(names, "train")
    assert members == [("train/airplane/0000.jpg", 0), ("train/cat/0001.jpg", 3)]


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_federated(cifar10_arrays, partition):
    d = load_federated("cifar10", num_clients=20, seed=0, partition=partition, alpha=0.3)
    assert (d.kind, d.num_classes, d.input_shape) == ("images", 10, (32, 32, 3))
    assert len(d.client_ids) == 20
    assert int(d.train.num_examples.sum()) == 50_000 and int(d.test.num_examples.sum()) == 10_000
    np.testing.assert_array_equal(np.asarray(d.train.valid).sum(1), d.train.num_examples)
    labels = d.train.y[d.train.valid]
    np.testing.assert_array_equal(np.bincount(labels), [5_000] * 10)
    if partition == "iid":
        assert int(d.train.num_examples.max() - d.train.num_examples.min()) <= 1
    else:
        parts = [d.train.y[c, : d.train.num_examples[c]] for c in range(20)]
        offsets = np.cumsum([0] + [len(p) for p in parts])
        ranges = [np.arange(a, b) for a, b in zip(offsets, offsets[1:])]
        skew = label_skew(np.concatenate(parts), ranges)
        assert skew > 0.3
    again = load_federated("cifar10", num_clients=20, seed=0, partition=partition, alpha=0.3)
    np.testing.assert_array_equal(again.train.y, d.train.y)


def test_choose_clients_among_partitions(cifar10_arrays):
    all_parts = load_federated("cifar10", num_clients=50, seed=3, partition="iid")
    some = load_federated("cifar10", num_clients=5, num_partitions=50, seed=3, partition="iid")
    again = load_federated("cifar10", num_clients=5, num_partitions=50, seed=3, partition="iid")
    assert len(some.client_ids) == 5 and some.client_ids == again.client_ids
    assert set(some.client_ids) <= set(all_parts.client_ids)
    for cid in some.client_ids:  # the chosen clients hold exactly their partition of all 50
        i, j = all_parts.client_ids.index(cid), some.client_ids.index(cid)
        n = int(all_parts.train.num_examples[i])
        assert int(some.train.num_examples[j]) == n == 1_000
        np.testing.assert_array_equal(some.train.x[j, :n], all_parts.train.x[i, :n])
    with pytest.raises(ValueError, match="num_partitions=4 must be >= num_clients=5"):
        load_federated("cifar10", num_clients=5, num_partitions=4, seed=3)
