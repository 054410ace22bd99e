"""Prepared records are keyed by the raw files' content: changed data is noticed, never served stale."""

import logging
import os

import numpy as np

from clipjax.data import femnist, tfds_store
from tests.data.shared_files import shared_file

NPZ = "femnist/femnist_leaf_300writers_uint8.npz"


def _write_subset(source, target, writers: int) -> None:
    """The first `writers` writers of the packed npz, in the same format."""
    with np.load(source) as d:
        arrays = {k: d[k] for k in d.files}
    out = dict(arrays)
    for split in ("train", "test"):
        rows = arrays[f"w_{split}"] < writers
        for key in ("x", "y", "w"):
            out[f"{key}_{split}"] = arrays[f"{key}_{split}"][rows]
    out["writers"] = arrays["writers"][:writers]
    out["writer_source_repo"] = arrays["writer_source_repo"][:writers]
    np.savez(target, **out)


def test_a_replaced_raw_file_rebuilds_the_records_with_one_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CLIPJAX_TFDS_DIR", str(tmp_path / "tfds"))
    data = tmp_path / "data" / "femnist"
    data.mkdir(parents=True)
    _write_subset(shared_file(NPZ, "femnist"), data / "femnist_leaf_300writers_uint8.npz", 80)
    first = femnist.load_clients(tmp_path / "data")
    assert len(first.client_ids) == 80 and first.prepare_seconds > 0
    again = femnist.load_clients(tmp_path / "data")
    assert again.prepare_seconds == 0 and again.source == first.source

    _write_subset(shared_file(NPZ, "femnist"), data / "femnist_leaf_300writers_uint8.npz", 50)
    with caplog.at_level(logging.WARNING):
        changed = femnist.load_clients(tmp_path / "data")
    assert len(changed.client_ids) == 50 and changed.prepare_seconds > 0
    assert changed.source.sha256 != first.source.sha256
    lines = [r.getMessage() for r in caplog.records if "changed" in r.getMessage()]
    assert len(lines) == 1 and "preparing them again" in lines[0] and "\n" not in lines[0]
    stores = sorted(p.name for p in (tmp_path / "tfds").iterdir() if p.is_dir())
    assert stores == [f"clipjax_femnist-npz-{changed.source.sha256[:16]}"]  # the stale one removed


def test_a_touched_but_unchanged_file_reuses_its_records(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPJAX_TFDS_DIR", str(tmp_path / "tfds"))
    data = tmp_path / "data" / "femnist"
    data.mkdir(parents=True)
    npz = data / "femnist_leaf_300writers_uint8.npz"
    _write_subset(shared_file(NPZ, "femnist"), npz, 20)
    first = femnist.load_clients(tmp_path / "data")
    os.utime(npz, ns=(1, 1))  # new mtime, same bytes: hashed again, same fingerprint
    again = femnist.load_clients(tmp_path / "data")
    assert again.prepare_seconds == 0 and again.source == first.source


def test_the_hash_is_cached_by_size_and_mtime(tmp_path):
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"abc")
    digest = tfds_store.file_sha256(raw, tmp_path / "cache")
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    stat = raw.stat()
    raw.write_bytes(b"xyz")  # same size; restore the mtime: the cached hash is trusted
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert tfds_store.file_sha256(raw, tmp_path / "cache") == digest
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # any change of mtime: hashed again
    assert tfds_store.file_sha256(raw, tmp_path / "cache") != digest
