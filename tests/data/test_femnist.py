"""FEMNIST from LEAF's real output: counts, LEAF's pixel convention, LEAF JSON == npz."""

import pathlib
import tarfile

import numpy as np
import pytest

from clipjax.data import femnist, load_federated
from tests.data.shared_files import shared_file

LEAF_TAR = "femnist/leaf_json_originals/arakotom__flic__4646796.tar.xz"
NPZ = "femnist/femnist_leaf_300writers_uint8.npz"


def test_counts(femnist_all):
    d = femnist_all
    assert (d.name, d.kind, d.num_classes, d.input_shape, d.seq_len) == (
        "femnist", "images", 62, (28, 28, 1), 0)
    assert len(d.client_ids) == 300 and list(d.client_ids) == sorted(d.client_ids)
    assert int(d.train.num_examples.sum()) == 41_495
    assert int(d.test.num_examples.sum()) == 4_763
    assert d.train.x.dtype == np.uint8 and d.train.x.shape[2:] == (28, 28, 1)
    assert d.train.y.dtype == np.int32 and d.train.valid.dtype == bool
    labels = d.train.y[d.train.valid]
    assert set(np.unique(labels)) == set(range(62))
    assert np.all(d.test.num_examples >= 1)
    # LEAF convention kept: 255 = white background, so the median pixel is 255.
    assert np.median(d.train.x[0, : d.train.num_examples[0]]) == 255


def test_matches_npz(femnist_all):
    with np.load(shared_file(NPZ, "femnist")) as raw:
        writers = list(raw["writers"])
        c = 17
        i = writers.index(femnist_all.client_ids[c])
        rows = raw["w_train"] == i
        n = int(rows.sum())
        np.testing.assert_array_equal(femnist_all.train.x[c, :n, :, :, 0], raw["x_train"][rows])
        np.testing.assert_array_equal(femnist_all.train.y[c, :n], raw["y_train"][rows])


def _extract_leaf_subset(dest: pathlib.Path) -> pathlib.Path:
    """Extracts one train/test file pair of a LEAF output (real JSON) into ``dest``."""
    wanted = {"train/all_data_1_niid_05_keep_0_train_9.json",
              "test/all_data_1_niid_05_keep_0_test_9.json"}
    with tarfile.open(shared_file(LEAF_TAR, "femnist")) as tar:
        for member in tar.getmembers():
            tail = "/".join(member.name.split("/")[-2:])
            if tail in wanted:
                member.name = tail
                tar.extract(member, dest, filter="data")
    return dest


def test_leaf_json_folder_agrees_with_npz(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPJAX_TFDS_DIR", str(tmp_path / "tfds"))
    folder = _extract_leaf_subset(tmp_path / "leaf")
    assert femnist.is_leaf_folder(folder)
    d = load_federated("femnist", num_clients=None, seed=0, data_dir=folder)
    assert d.kind == "images" and len(d.client_ids) > 5
    with np.load(shared_file(NPZ, "femnist")) as raw:
        writers = list(raw["writers"])
        source = raw["writer_source_repo"]
        shared = [w for w in d.client_ids
                  if w in writers and source[writers.index(w)] == "arakotom/flic"]
        assert len(shared) >= 5
        for w in shared:
            c, i = d.client_ids.index(w), writers.index(w)
            for split, packed in (("train", d.train), ("test", d.test)):
                rows = raw[f"w_{split}"] == i
                n = int(packed.num_examples[c])
                assert n == int(rows.sum())
                np.testing.assert_array_equal(packed.x[c, :n, :, :, 0], raw[f"x_{split}"][rows])
                np.testing.assert_array_equal(packed.y[c, :n], raw[f"y_{split}"][rows])


def test_leaf_pixels_are_k_over_255():
    x = [[k / 255.0 for k in range(256)] + [1.0] * (784 - 256)]
    np.testing.assert_array_equal(femnist._leaf_pixels(x, "t").reshape(-1)[:256], np.arange(256))
    with pytest.raises(ValueError, match="k/255"):
        femnist._leaf_pixels([[0.5] * 784], "t")


def test_max_examples_keeps_a_seeded_subset_of_each_large_writer():
    full = load_federated("femnist", num_clients=6, seed=3)
    cut = load_federated("femnist", num_clients=6, seed=3, max_examples=100)
    again = load_federated("femnist", num_clients=6, seed=3, max_examples=100)
    n_full, n_cut = full.train.num_examples, cut.train.num_examples
    np.testing.assert_array_equal(n_cut, np.minimum(n_full, 100))
    np.testing.assert_array_equal(cut.train.x, again.train.x)  # a pure function of the seed
    for c in range(len(n_full)):
        rows = {full.train.x[c, i].tobytes(): full.train.y[c, i] for i in range(n_full[c])}
        for i in range(n_cut[c]):  # every kept image is one of the writer's, with its label
            assert rows[cut.train.x[c, i].tobytes()] == cut.train.y[c, i]
