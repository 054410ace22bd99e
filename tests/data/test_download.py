"""scripts/download_data.py and clipjax.data.download against a server on 127.0.0.1.

Good archives, a wrong checksum, an interrupted download (resumed, and restarted where the server
ignores ranges), offline; the real Shakespeare file and real LEAF JSON under their pinned sha256;
a CIFAR-10 binary archive made here in the official format, read back exactly.
"""

import hashlib
import io
import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from clipjax.data import cifar10, download, femnist, femnist_sources, find_data_file
from clipjax.data import load_federated
from tests.data import loopback
from tests.data.shared_files import shared_file

REPO = pathlib.Path(__file__).resolve().parents[2]
LEAF_TARS = {
    "wenzhu23333/Federated-Learning": "wenzhu23333__Federated-Learning__2ccec0f.tar.xz",
    "arakotom/flic": "arakotom__flic__4646796.tar.xz",
    "slz-ai/leaf-torch": "slz-ai__leaf-torch__5a94e3b.tar.xz",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(root: pathlib.Path, dest: str, data: bytes) -> download.Source:
    (root / dest).parent.mkdir(parents=True, exist_ok=True)
    (root / dest).write_bytes(data)
    return download.Source(url=f"https://origin.invalid/{dest}", dest=dest, sha256=_sha(data),
                           size=len(data))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPJAX_TFDS_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("CLIPJAX_DATA_MIRROR", raising=False)


def test_good_file_lands_under_its_name_and_is_not_fetched_again(tmp_path):
    source = _put(tmp_path / "mirror", "shakespeare/x.txt.gz", b"a" * 5000)
    with loopback.serve(tmp_path / "mirror") as server:
        [path] = download.download(["shakespeare"], tmp_path / "data", mirror=server.url,
                                   progress=False, table={"shakespeare": [source]})
        assert path == tmp_path / "data" / "shakespeare" / "x.txt.gz"
        assert path.read_bytes() == b"a" * 5000
        assert not path.with_name("x.txt.gz.part").exists()
        download.download(["shakespeare"], tmp_path / "data", mirror=server.url, progress=False,
                          table={"shakespeare": [source]})
    assert len(server.requests) == 1  # the second call found the file in place


def test_wrong_checksum_is_one_line_and_leaves_nothing(tmp_path):
    source = _put(tmp_path / "mirror", "cifar10/a.tar.gz", b"good bytes")
    (tmp_path / "mirror" / "cifar10" / "a.tar.gz").write_bytes(b"tampered bytes")
    with loopback.serve(tmp_path / "mirror") as server:
        with pytest.raises(download.DownloadError) as err:
            download.download(["cifar10"], tmp_path / "data", mirror=server.url, progress=False,
                              table={"cifar10": [source]})
    message = str(err.value)
    assert "sha256" in message and "removed" in message and "\n" not in message
    assert not list((tmp_path / "data" / "cifar10").iterdir())


def test_interrupted_download_is_resumed_with_a_range_request(tmp_path):
    data = bytes(range(256)) * 400
    source = _put(tmp_path / "mirror", "femnist/leaf_json/train/f.json", data)
    part = tmp_path / "data" / "femnist" / "leaf_json" / "train" / "f.json.part"
    with loopback.serve(tmp_path / "mirror", cut_once={"/" + source.dest}) as server:
        with pytest.raises(download.DownloadError, match="partial file is kept"):
            download.fetch(source, tmp_path / "data", mirror=server.url, progress=False)
        assert 0 < part.stat().st_size < len(data)
        have = part.stat().st_size
        path = download.fetch(source, tmp_path / "data", mirror=server.url, progress=False)
    assert path.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("/" + source.dest, f"bytes={have}-")


def test_interrupted_download_restarts_when_the_server_ignores_ranges(tmp_path):
    data = b"xyz" * 9000
    source = _put(tmp_path / "mirror", "cifar10/b.bin", data)
    with loopback.serve(tmp_path / "mirror", cut_once={"/" + source.dest},
                        ignore_range=True) as server:
        with pytest.raises(download.DownloadError):
            download.fetch(source, tmp_path / "data", mirror=server.url, progress=False)
        path = download.fetch(source, tmp_path / "data", mirror=server.url, progress=False)
    assert path.read_bytes() == data


def test_offline_is_one_line_naming_the_url_and_where_the_file_goes(tmp_path):
    with loopback.serve(tmp_path) as server:
        url = server.url  # a port that nothing listens on once the server is closed
    with pytest.raises(download.DownloadError) as err:
        download.fetch(download.SHAKESPEARE[0], tmp_path / "data", mirror=url, progress=False)
    message = str(err.value)
    assert f"{url}/shakespeare/shakespeare.txt.gz" in message and "\n" not in message
    assert str(tmp_path / "data" / "shakespeare" / "shakespeare.txt.gz") in message


def test_a_wrong_file_already_in_place_is_not_overwritten(tmp_path):
    target = tmp_path / "data" / "shakespeare" / "shakespeare.txt.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"my own notes")
    with pytest.raises(download.DownloadError, match="move it away"):
        download.fetch(download.SHAKESPEARE[0], tmp_path / "data", mirror="http://127.0.0.1:9",
                       progress=False)
    assert target.read_bytes() == b"my own notes"


def test_the_script_fetches_the_real_shakespeare_file_under_its_pinned_sha256(tmp_path):
    mirror = tmp_path / "mirror" / "shakespeare"
    mirror.mkdir(parents=True)
    mirror.joinpath("shakespeare.txt.gz").write_bytes(
        find_data_file("shakespeare/shakespeare.txt.gz", "shakespeare").read_bytes())
    with loopback.serve(tmp_path / "mirror") as server:
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "download_data.py"), "shakespeare",
             f"--dest={tmp_path / 'data'}", f"--mirror={server.url}"],
            capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "sha256 checked" in done.stdout
    got = tmp_path / "data" / "shakespeare" / "shakespeare.txt.gz"
    assert _sha(got.read_bytes()) == download.SHAKESPEARE[0].sha256
    clients = load_federated("shakespeare", num_clients=3, seed=0, data_dir=tmp_path / "data")
    assert clients.source["sha256"] == download.SHAKESPEARE[0].sha256


def test_the_script_rejects_an_unknown_dataset_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "download_data.py"), "mnist",
                           f"--dest={tmp_path}"], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: unknown dataset mnist; choose from femnist, shakespeare, cifar10 or all."]


def _leaf_mirror(root: pathlib.Path, files) -> None:
    """Lays the real LEAF JSON `files` (from the shared tars) out as a mirror of the data folder."""
    wanted: dict[str, list] = {}
    for f in files:
        repo = "/".join(f.url.split("/")[3:5])
        wanted.setdefault(repo, []).append(f)
    for repo, entries in wanted.items():
        by_path = {"/".join(f.url.split("/")[6:]): f for f in entries}
        with tarfile.open(shared_file(f"femnist/leaf_json_originals/{LEAF_TARS[repo]}",
                                      "femnist")) as tar:
            for member in tar.getmembers():
                if member.name in by_path:
                    target = root / by_path[member.name].dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())


def test_real_leaf_json_under_pinned_sha256_loads_as_leaf_writers(tmp_path):
    pair = [f for f in femnist_sources.FILES
            if f.dest.split("/")[-1].startswith("2-arakotom_flic__all_data_1_niid")]
    assert len(pair) == 2  # the train and test file of one LEAF output
    _leaf_mirror(tmp_path / "mirror", pair)
    table = {"femnist": [download.Source(f.url, f.dest, f.sha256, f.size) for f in pair]}
    with loopback.serve(tmp_path / "mirror") as server:
        download.download(["femnist"], tmp_path / "data", mirror=server.url, progress=False,
                          table=table)
    d = load_federated("femnist", num_clients=None, seed=0, data_dir=tmp_path / "data")
    assert d.kind == "images" and len(d.client_ids) > 5
    assert d.source["files"] == sorted(str(tmp_path / "data" / f.dest) for f in pair)


@pytest.mark.slow
def test_all_pinned_leaf_files_give_exactly_the_packed_300_writers(tmp_path):
    """The downloader's layout of all 167 files reads as the npz: same writers, same images."""
    _leaf_mirror(tmp_path, femnist_sources.FILES)
    folder = tmp_path / "femnist" / "leaf_json"
    for f in femnist_sources.FILES:
        assert _sha((tmp_path / f.dest).read_bytes()) == f.sha256, f.dest
    leaf = femnist.read_leaf_folder(folder)
    packed = femnist.read_npz(shared_file("femnist/femnist_leaf_300writers_uint8.npz", "femnist"))
    assert list(leaf) == list(packed) and len(leaf) == 300
    for writer, arrays in packed.items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(leaf[writer][key], value, err_msg=f"{writer} {key}")


def _cifar_binary_archive(images: np.ndarray, labels: np.ndarray, per_batch: int) -> bytes:
    """A tar.gz in the official CIFAR-10 binary layout (5 train batches + 1 test batch)."""
    records = np.concatenate([labels[:, None].astype(np.uint8),
                              images.transpose(0, 3, 1, 2).reshape(len(images), -1)], axis=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        for b, name in enumerate(names):
            blob = records[b * per_batch:(b + 1) * per_batch].tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def test_cifar10_binary_archive_downloads_and_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    per_batch = 4
    images = rng.integers(0, 256, size=(6 * per_batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6 * per_batch).astype(np.int32)
    source = _put(tmp_path / "mirror", "cifar10/cifar-10-binary.tar.gz",
                  _cifar_binary_archive(images, labels, per_batch))
    with loopback.serve(tmp_path / "mirror") as server:
        download.download(["cifar10"], tmp_path / "data", mirror=server.url, progress=False,
                          table={"cifar10": [source]})
    (x_train, y_train), (x_test, y_test), raw = cifar10.load(tmp_path / "data")
    np.testing.assert_array_equal(x_train, images[:5 * per_batch])
    np.testing.assert_array_equal(y_train, labels[:5 * per_batch])
    np.testing.assert_array_equal(x_test, images[5 * per_batch:])
    np.testing.assert_array_equal(y_test, labels[5 * per_batch:])
    assert raw.sha256 == source.sha256


def test_pinned_table_names_each_file_once_under_its_dataset():
    for name in download.DATASETS:
        dests = [s.dest for s in download.sources(name)]
        assert len(dests) == len(set(dests)) and all(d.startswith(name + "/") for d in dests)
        assert all(len(s.sha256) == 64 for s in download.sources(name))
    assert len(download.sources("femnist")) == 167
    assert sum(s.size for s in download.sources("femnist")) == 296_469_221


def test_the_script_skips_a_dataset_the_loaders_already_find(tmp_path):
    data = tmp_path / "data" / "shakespeare"
    data.mkdir(parents=True)
    (data / "shakespeare.txt.gz").write_bytes(b"already here")
    env = {k: v for k, v in os.environ.items() if k != "CLIPJAX_DATA_MIRROR"}
    env["CLIPJAX_DATA"] = str(tmp_path / "data")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "download_data.py"),
                           "shakespeare", "--mirror=http://127.0.0.1:9"], capture_output=True,
                          text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"shakespeare: found at {data / 'shakespeare.txt.gz'}")
    assert (data / "shakespeare.txt.gz").read_bytes() == b"already here"


def test_a_file_the_mirror_lacks_is_one_line_with_the_http_status(tmp_path):
    with loopback.serve(tmp_path) as server:
        with pytest.raises(download.DownloadError) as err:
            download.fetch(download.CIFAR10[0], tmp_path / "data", mirror=server.url,
                           progress=False)
    message = str(err.value)
    assert "HTTP 404" in message and "cifar-10-binary.tar.gz" in message and "\n" not in message
