"""CIFAR-10 as centralised arrays, to be partitioned over clients (host side).

Sources, in order:

1. tensorflow-datasets' own ``cifar10`` when it is already prepared locally
   (``tfds.data_source("cifar10", download=False)``; original lossless pixels). Only tried when
   no ``data_dir`` is given; nothing is downloaded.
2. The image-folder zip ``<data>/cifar10/cifar10_jpeg.zip`` (``train/<class>/NNNN.jpg``,
   ``test/<class>/NNNN.jpg``; labels in the order of :data:`CLASSES`). These are JPEG
   re-encodings (median PSNR 30.7 dB vs the originals): accuracy on them can differ slightly
   from the original CIFAR-10; say so next to numbers produced from them.

The zip is decoded once into a tfds builder (``array_record``, records of up to
:data:`BLOCK` images in file order) and reused.
"""

from __future__ import annotations

import io
import logging
import pathlib
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from clipjax.data import paths, tfds_store

ZIP_FILE = "cifar10/cifar10_jpeg.zip"
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


def load_arrays(data_dir=None) -> tuple[Arrays, Arrays]:
  """CIFAR-10 ``((x_train, y_train), (x_test, y_test))``: uint8 [N, 32, 32, 3], int32 [N].

  Args:
    data_dir: raw data folder holding ``cifar10/cifar10_jpeg.zip``; None to try tfds'
      ``cifar10`` and then search the data folders.

  Raises:
    FileNotFoundError: if neither source is available (names the file and folders searched).
  """
  if data_dir is None and (found := _from_tfds_cifar10()) is not None:
    return found
  raw = paths.locate(ZIP_FILE, "cifar10", data_dir)
  builder, _ = tfds_store.prepared_builder(
      ClipjaxCifar10, data_dir=paths.tfds_dir(), manual_dir=raw.parent
  )
  out = []
  for split in ("train", "test"):
    records = tfds_store.read_split(builder, split)
    out.append((np.concatenate([r["image"] for r in records]),
                np.concatenate([r["label"] for r in records]).astype(np.int32)))
  return out[0], out[1]
