"""Preparing and reading tensorflow-datasets builders with a manual_dir (host side).

Each dataset is a ``tfds.core.GeneratorBasedBuilder`` whose raw files are given as the
``manual_dir``; it is written once as ``array_record`` files (no TensorFlow needed) and read back
with ``builder.as_data_source()``. Records are written in generation order
(``DatasetInfo(disable_shuffling=True)``), so client order is the order the builder produced.

Prepared records are keyed by a fingerprint of the raw files they were made from (DESIGN 3): each
file's sha256, cached in ``<records>/raw_sha256.json`` beside the records together with the
file's size and mtime (a file whose size and mtime are unchanged is not hashed again). Records
live in ``<records>/<builder>-<config>-<fingerprint>``; when a raw file changes, its fingerprint
changes, the records are prepared again with one line saying so, and the stale ones are removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import time
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class ClientLists:
  """Per-client host arrays of one dataset, before client choice and packing.

  Attributes:
    client_ids: one id per client, in a fixed order.
    train_x: per client, images uint8 [N, H, W, ch] or text symbol ids uint8 [L].
    train_y: per client, int32 [N] labels (images) or None (text).
    test_x: as ``train_x`` for the test split.
    test_y: as ``train_y`` for the test split.
    prepare_seconds: seconds spent preparing the tfds records in this call (0 when reused).
    source: the raw files the records were made from and their sha256.
  """

  client_ids: tuple[str, ...]
  train_x: list[np.ndarray]
  train_y: list[np.ndarray] | None
  test_x: list[np.ndarray]
  test_y: list[np.ndarray] | None
  prepare_seconds: float = 0.0
  source: "RawSource | None" = None


@dataclasses.dataclass(frozen=True)
class RawSource:
  """The raw data files a run trained on (recorded in its ``summary.json``).

  Attributes:
    files: absolute paths of the raw files, sorted.
    sha256: the file's sha256 (one file), else the sha256 of the ``"<name> <sha256>"`` lines of
      all of them.
  """

  files: tuple[str, ...]
  sha256: str

  def as_dict(self) -> dict[str, Any]:
    return {"files": list(self.files), "sha256": self.sha256}


_HASHES = "raw_sha256.json"
_INDEX = "prepared.json"


def _write_json(path: pathlib.Path, value) -> None:
  """Writes JSON to a temporary name and renames it (a reader never sees half a file)."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
  os.replace(tmp, path)


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):  # absent or unreadable: start again (it is only a cache)
    return {}


def sha256_of(path: pathlib.Path) -> str:
  """Hex sha256 of a file, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def file_sha256s(paths: Sequence[pathlib.Path], cache_folder: pathlib.Path) -> list[str]:
  """sha256 of each of ``paths``, cached in ``cache_folder/raw_sha256.json`` by (size, mtime):
  the table is read once, only files whose size or mtime changed are hashed, and it is written
  once if anything was."""
  table_file = pathlib.Path(cache_folder) / _HASHES
  table = _read_json(table_file)
  fresh, out = {}, []
  for path in (pathlib.Path(p).resolve() for p in paths):
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns]
    entry = table.get(str(path))
    if not (entry and entry[:2] == stamp):
      entry = fresh[str(path)] = stamp + [sha256_of(path)]
    out.append(entry[2])
  if fresh:
    table = _read_json(table_file)  # re-read: another process may have added entries
    table.update(fresh)
    pathlib.Path(cache_folder).mkdir(parents=True, exist_ok=True)
    _write_json(table_file, table)
  return out


def file_sha256(path: pathlib.Path, cache_folder: pathlib.Path) -> str:
  """sha256 of one file, cached as :func:`file_sha256s` caches it."""
  return file_sha256s([path], cache_folder)[0]


def raw_source(files: Sequence[pathlib.Path], cache_folder: pathlib.Path) -> RawSource:
  """The fingerprint of ``files`` (see :class:`RawSource`)."""
  paths = sorted(pathlib.Path(f).resolve() for f in files)
  if not paths:
    raise ValueError("no raw data files to fingerprint.")
  hashes = file_sha256s(paths, cache_folder)
  if len(paths) == 1:
    return RawSource((str(paths[0]),), hashes[0])
  lines = "".join(f"{p.name} {h}\n" for p, h in zip(paths, hashes))
  return RawSource(tuple(str(p) for p in paths), hashlib.sha256(lines.encode()).hexdigest())


class ManualBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the clipjax builders: raw files come from ``manual_dir``, nothing is downloaded.

  Abstract (tfds does not register it). ``code_path`` is None because these builders ship no
  checksums file, which also keeps tfds from probing package resources (that probe needs
  the optional ``importlib_resources`` package).
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=invalid-name
    return None


def prepared_builder(
    builder_cls: type[tfds.core.GeneratorBasedBuilder],
    *,
    data_dir: pathlib.Path,
    manual_dir: pathlib.Path,
    raw_files: Sequence[pathlib.Path],
    config: str | None = None,
) -> tuple[tfds.core.DatasetBuilder, float, RawSource]:
  """Returns the builder with its records prepared (once per content of the raw files).

  Args:
    builder_cls: the dataset's builder class.
    data_dir: folder of all prepared records (``<cache>/tfds``); the records of these raw files
      go to a subfolder named by their fingerprint.
    manual_dir: folder with the raw files the builder reads.
    raw_files: the raw files the builder reads (their content keys the records).
    config: builder config name, if the builder has several.

  Returns:
    ``(builder, seconds spent preparing, the raw files' fingerprint)``; seconds is 0.0 when
    records of the same content existed.
  """
  data_dir = pathlib.Path(data_dir)
  source = raw_source(raw_files, data_dir)
  name = f"{builder_cls.name}-{config or 'default'}"
  store = data_dir / f"{name}-{source.sha256[:16]}"
  kwargs: dict[str, Any] = {"data_dir": str(store), "file_format": "array_record"}
  if config is not None:
    kwargs["config"] = config
  builder = builder_cls(**kwargs)
  if builder.is_prepared():
    return builder, 0.0, source
  key = f"{name} {pathlib.Path(manual_dir).resolve()}"
  index = _read_json(data_dir / _INDEX)
  stale = index.get(key)
  if stale and stale["store"] != store.name:
    logging.warning("%s: the raw data changed since its records were prepared (sha256 %s... -> "
                    "%s...; %s); preparing them again.", name, stale["sha256"][:12],
                    source.sha256[:12], ", ".join(source.files))
  start = time.perf_counter()
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  seconds = time.perf_counter() - start
  index = _read_json(data_dir / _INDEX)
  index[key] = {"store": store.name, "sha256": source.sha256}
  _write_json(data_dir / _INDEX, index)
  if stale and stale["store"] != store.name:
    if all(v["store"] != stale["store"] for v in index.values()):
      shutil.rmtree(data_dir / stale["store"], ignore_errors=True)
  return builder, seconds, source


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict[str, Any]]:
  """All records of ``split`` as decoded numpy dicts, in stored order."""
  source = builder.as_data_source()[split]
  return list(source.__getitems__(list(range(len(source)))))


def as_text(value: Any) -> str:
  """Decodes a tfds ``Text`` feature value (bytes from a data source) to str."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
