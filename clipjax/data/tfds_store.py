"""Preparing and reading tensorflow-datasets builders with a manual_dir (host side).

Each dataset is a ``tfds.core.GeneratorBasedBuilder`` whose raw files are given as the
``manual_dir``; it is written once as ``array_record`` files (no TensorFlow needed) and read back
with ``builder.as_data_source()``. Records are written in generation order
(``DatasetInfo(disable_shuffling=True)``), so client order is the order the builder produced.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

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
  """

  client_ids: tuple[str, ...]
  train_x: list[np.ndarray]
  train_y: list[np.ndarray] | None
  test_x: list[np.ndarray]
  test_y: list[np.ndarray] | None
  prepare_seconds: float = 0.0


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
    config: str | None = None,
) -> tuple[tfds.core.DatasetBuilder, float]:
  """Returns the builder with its records prepared under ``data_dir`` (once).

  Args:
    builder_cls: the dataset's builder class.
    data_dir: tfds data folder that holds (or will hold) the prepared records.
    manual_dir: folder with the raw files the builder reads.
    config: builder config name, if the builder has several.

  Returns:
    ``(builder, seconds spent preparing)``; seconds is 0.0 when the records already existed.
  """
  kwargs: dict[str, Any] = {"data_dir": str(data_dir), "file_format": "array_record"}
  if config is not None:
    kwargs["config"] = config
  builder = builder_cls(**kwargs)
  if builder.is_prepared():
    return builder, 0.0
  start = time.perf_counter()
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder, time.perf_counter() - start


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict[str, Any]]:
  """All records of ``split`` as decoded numpy dicts, in stored order."""
  source = builder.as_data_source()[split]
  return list(source.__getitems__(list(range(len(source)))))


def as_text(value: Any) -> str:
  """Decodes a tfds ``Text`` feature value (bytes from a data source) to str."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
