"""CIFAR-10 as centralised arrays, to be partitioned over clients (host side).

Sources, in order:

1. tensorflow-datasets' own ``cifar10`` when it is already prepared locally
   (``tfds.data_source("cifar10", download=False)``; original lossless pixels). Only tried when
   no ``data_dir`` is given; nothing is downloaded.
2. The official binary archive ``<data>/cifar10/cifar-10-binary.tar.gz`` (what
   ``scripts/download_data.py cifar10`` fetches; original lossless pixels): five training
   batches and one test batch of 10,000 records, each a label byte and 3,072 pixel bytes
   (1,024 red, 1,024 green, 1,024 blue, rows in order). Read directly, in batch order.
3. The image-folder zip ``<data>/cifar10/cifar10_jpeg.zip`` (``train/<class>/NNNN.jpg``,
   ``test/<class>/NNNN.jpg``; labels in the order of :data:`CLASSES`). These are JPEG
   re-encodings (median PSNR 30.7 dB vs the originals): accuracy on them can differ slightly
   from the original CIFAR-10; say so next to numbers produced from them.

The zip is decoded once into a tfds builder (``array_record``, records of up to
:data:`BLOCK` images in file order, keyed by the zip's sha256) and reused.
"""

from __future__ import annotations

import io
import logging
import pathlib
import tarfile
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from clipjax.data import paths, tfds_store

ZIP_FILE = "cifar10/cifar10_jpeg.zip"
BINARY_FILE = "cifar10/cifar-10-binary.tar.gz"
RAW_FILES = (BINARY_FILE, ZIP_FILE)  # what load looks for, in this order
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCHES = ("test_batch.bin",)
_RECORD = 1 + 32 * 32 * 3
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
BLOCK = 1000

Arrays = tuple[np.ndarray, np.ndarray]


def zip_members(names: list[str], split: str) -> list[tuple[str, int]]:
  """``(member, label)`` of the JPEGs of ``split`` in a CIFAR-10 image-folder zip, sorted."""
  out = []
  for name in sorted(names):
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == split and parts[2].lower().endswith((".jpg", ".png")):
      if parts[1] not in CLASSES:
        raise ValueError(f"Unknown CIFAR-10 class folder {parts[1]!r} in {name!r}.")
      out.append((name, CLASSES.index(parts[1])))
  return out


class ClipjaxCifar10(tfds_store.ManualBuilder):
  """CIFAR-10 from the image-folder zip, in blocks of up to BLOCK images."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = paths.HOW_TO_GET["cifar10"]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="CIFAR-10 (JPEG image-folder zip), blocks of images in file order.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(
                shape=(None,) + IMAGE_SHAPE, dtype=np.uint8,
                encoding=tfds.features.Encoding.BYTES),
            "label": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    raw = pathlib.Path(dl_manager.manual_dir) / pathlib.Path(ZIP_FILE).name
    return {s: self._generate_examples(raw, s) for s in ("train", "test")}

  def _generate_examples(self, raw, split):
    with zipfile.ZipFile(raw) as z:
      members = zip_members(z.namelist(), split)
      if not members:
        raise ValueError(f"{raw}: no {split}/<class>/*.jpg members.")
      for b, start in enumerate(range(0, len(members), BLOCK)):
        block = members[start : start + BLOCK]
        images = np.stack([_decode(z.read(name), name) for name, _ in block])
        labels = np.array([label for _, label in block], dtype=np.int32)
        yield b, {"image": images, "label": labels}


def _decode(data: bytes, name: str) -> np.ndarray:
  image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
  if image.shape != IMAGE_SHAPE:
    raise ValueError(f"{name}: image shape {image.shape}, expected {IMAGE_SHAPE}.")
  return image


def _from_tfds_cifar10() -> tuple[Arrays, Arrays] | None:
  """tfds' own cifar10 if already prepared locally, else None (never downloads)."""
  try:
    sources = tfds.data_source("cifar10", download=False)
    out = []
    for split in ("train", "test"):
      records = sources[split].__getitems__(list(range(len(sources[split]))))
      out.append((np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records]),
                  np.array([r["label"] for r in records], dtype=np.int32)))
    return out[0], out[1]
  except Exception as err:  # Not prepared locally (the usual case offline): use the zip.
    logging.info("tfds cifar10 not available locally (%s); using the image-folder zip.", err)
    return None


def read_binary(archive: pathlib.Path) -> tuple[Arrays, Arrays]:
  """The official CIFAR-10 binary archive as ``((x_train, y_train), (x_test, y_test))``.

  Raises:
    ValueError: a batch file missing or not a whole number of records, a label above 9.
  """
  batches: dict[str, bytes] = {}
  with tarfile.open(archive, "r:gz") as tar:
    for member in tar.getmembers():
      name = pathlib.PurePosixPath(member.name).name
      if member.isfile() and name in TRAIN_BATCHES + TEST_BATCHES:
        batches[name] = tar.extractfile(member).read()
  out = []
  for names in (TRAIN_BATCHES, TEST_BATCHES):
    missing = [n for n in names if n not in batches]
    if missing:
      raise ValueError(f"{archive}: no {', '.join(missing)}; it is not the CIFAR-10 binary "
                       "archive (run `python scripts/download_data.py cifar10` again).")
    data = b"".join(batches[n] for n in names)
    if len(data) % _RECORD:
      raise ValueError(f"{archive}: batch sizes are not whole {_RECORD}-byte records.")
    records = np.frombuffer(data, np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max(initial=0) >= NUM_CLASSES:
      raise ValueError(f"{archive}: label {labels.max()} above 9.")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    out.append((np.ascontiguousarray(images), labels))
  return out[0], out[1]


def load(data_dir=None) -> tuple[Arrays, Arrays, tfds_store.RawSource | None]:
  """CIFAR-10 ``((x_train, y_train), (x_test, y_test), source)``: uint8 [N, 32, 32, 3], int32 [N].

  Args:
    data_dir: raw data folder holding ``cifar10/cifar-10-binary.tar.gz`` or
      ``cifar10/cifar10_jpeg.zip``; None to try tfds' ``cifar10`` and then search the data
      folders.

  Returns:
    The two splits and the raw file's fingerprint (None for tfds' own prepared ``cifar10``).

  Raises:
    FileNotFoundError: if no source is available (one line naming the files, the folders
      searched and ``scripts/download_data.py``).
  """
  if data_dir is None and (found := _from_tfds_cifar10()) is not None:
    return found[0], found[1], None
  raw = paths.locate_first(RAW_FILES, "cifar10", data_dir)
  if raw.name == pathlib.Path(BINARY_FILE).name:
    train, test = read_binary(raw)
    return train, test, tfds_store.raw_source([raw], paths.tfds_dir())
  builder, _, source = tfds_store.prepared_builder(
      ClipjaxCifar10, data_dir=paths.tfds_dir(), manual_dir=raw.parent, raw_files=[raw]
  )
  out = []
  for split in ("train", "test"):
    records = tfds_store.read_split(builder, split)
    out.append((np.concatenate([r["image"] for r in records]),
                np.concatenate([r["label"] for r in records]).astype(np.int32)))
  return out[0], out[1], source


def load_arrays(data_dir=None) -> tuple[Arrays, Arrays]:
  """CIFAR-10 ``((x_train, y_train), (x_test, y_test))`` (:func:`load` without the source)."""
  train, test, _ = load(data_dir)
  return train, test
