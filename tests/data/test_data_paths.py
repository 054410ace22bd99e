"""Clear errors: unknown dataset, missing data folder."""

import pytest

from clipjax.data import find_data_file, load_federated


def test_unknown_dataset_lists_known():
    with pytest.raises(ValueError, match="femnist, shakespeare, cifar10"):
        load_federated("mnist", num_clients=None, seed=0)


def test_unknown_partition():
    with pytest.raises(ValueError, match="iid, dirichlet"):
        load_federated("cifar10", num_clients=10, seed=0, partition="pathological")


@pytest.mark.parametrize("name,file", [
    ("femnist", "femnist_leaf_300writers_uint8.npz"),
    ("shakespeare", "shakespeare.txt.gz"),
    ("cifar10", "cifar-10-binary.tar.gz"),
])
def test_missing_data_is_one_line_naming_file_folders_and_download(tmp_path, monkeypatch, name,
                                                                   file):
    monkeypatch.delenv("CLIPJAX_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("clipjax.data.paths._REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr("clipjax.data.cifar10._from_tfds_cifar10", lambda: None)
    with pytest.raises(FileNotFoundError) as err:
        load_federated(name, num_clients=None, seed=0)
    message = str(err.value)
    assert file in message
    for folder in (tmp_path / "data", tmp_path.parent / "shared" / "data"):
        assert str(folder) in message
    assert f"python scripts/download_data.py {name}" in message
    assert "\n" not in message


def test_a_set_clipjax_data_is_the_only_folder_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "femnist").mkdir(parents=True)   # would be found if it fell back
    (tmp_path / "data" / "femnist" / "femnist_leaf_300writers_uint8.npz").write_bytes(b"")
    (tmp_path / "env").mkdir()
    monkeypatch.setenv("CLIPJAX_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_federated("femnist", num_clients=None, seed=0)
    assert str(tmp_path / "env") in str(err.value) and str(tmp_path / "data") not in str(err.value)
    monkeypatch.setenv("CLIPJAX_DATA", "")
    with pytest.raises(ValueError, match="set but empty"):
        load_federated("femnist", num_clients=None, seed=0)
    monkeypatch.setenv("CLIPJAX_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="is not a folder"):
        load_federated("femnist", num_clients=None, seed=0)


def test_missing_in_given_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10_jpeg.zip"):
        load_federated("cifar10", num_clients=10, seed=0, data_dir=tmp_path)


def test_find_data_file_finds_shared():
    assert find_data_file("shakespeare/shakespeare.txt.gz", "shakespeare").is_file()


def test_prepared_records_go_to_the_cache_never_to_the_raw_data_folder(tmp_path, monkeypatch):
    from clipjax.data import paths
    monkeypatch.delenv("CLIPJAX_TFDS_DIR", raising=False)
    monkeypatch.setenv("CLIPJAX_CACHE", str(tmp_path / "cache"))
    assert paths.tfds_dir() == tmp_path / "cache" / "tfds"
    monkeypatch.delenv("CLIPJAX_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.tfds_dir() == tmp_path / "home" / ".cache" / "clipjax" / "tfds"
    monkeypatch.setenv("CLIPJAX_TFDS_DIR", str(tmp_path / "explicit"))
    assert paths.tfds_dir() == tmp_path / "explicit"
