"""FEMNIST (LEAF): one client per writer, LEAF's own train/test split (host side).

Two raw sources, both LEAF's real output:

* ``<data>/femnist/femnist_leaf_300writers_uint8.npz`` (default): a lossless repacking of the 300
  writers of three LEAF ``-s niid --sf 0.05 -k 0 -t sample --tf 0.9`` outputs that have both
  portions (41,495 train / 4,763 test images, 62 classes).
* a LEAF folder with ``train/*.json`` and ``test/*.json`` (LEAF's ``preprocess.sh`` output; keys
  ``users``, ``num_samples``, ``user_data[u] = {x: [[784 floats]], y: [int]}``). Writers with only
  one portion are dropped; a writer found in several files keeps its largest copy (as the npz).

Pixels keep LEAF's convention: LEAF stores k/255 with 255 = white background and dark ink; here
they are the uint8 k (not inverted, not float-converted), [N, 28, 28, 1]. Labels: 0-9 digits,
10-35 'A'-'Z', 36-61 'a'-'z'. Clients are ordered by writer id.

References:
  Caldas et al. LEAF: A Benchmark for Federated Settings. arXiv:1812.01097, 2018.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from clipjax.data import paths, tfds_store

NPZ_FILE = "femnist/femnist_leaf_300writers_uint8.npz"
LEAF_FOLDER = "femnist/leaf_json"  # what scripts/download_data.py femnist writes
RAW_FILES = (NPZ_FILE, LEAF_FOLDER)  # what load_clients looks for, in this order
NUM_CLASSES = 62
IMAGE_SHAPE = (28, 28, 1)


def is_leaf_folder(folder: pathlib.Path) -> bool:
  """True if ``folder`` looks like LEAF output: ``train/*.json`` and ``test/*.json``."""
  folder = pathlib.Path(folder)
  return any((folder / "train").glob("*.json")) and any((folder / "test").glob("*.json"))


def _leaf_pixels(x: list[list[float]], where: str) -> np.ndarray:
  """LEAF float pixels (k/255) -> uint8 k [N, 28, 28, 1], checking the values are exact."""
  floats = np.asarray(x, dtype=np.float64).reshape((-1,) + IMAGE_SHAPE)
  k = np.rint(floats * 255.0)
  if floats.size and (k.min() < 0 or k.max() > 255 or np.abs(k / 255.0 - floats).max() > 1e-6):
    raise ValueError(f"{where}: FEMNIST pixels are not LEAF's k/255 values in [0, 1].")
  return k.astype(np.uint8)


def read_leaf_folder(folder: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """Reads a LEAF FEMNIST folder into ``{writer: {x_train, y_train, x_test, y_test}}``.

  A folder may merge several LEAF samples (each a separate random choice of writers and of
  their train/test split): a file named ``<sample>__<LEAF name>.json`` belongs to ``<sample>``
  (no ``__``: one sample). A writer's train and test portions always come from the same sample,
  so no test image of one sample is a train image of another. A writer in several samples keeps
  the copy with the most images, on a tie the sample whose name sorts first (the downloader
  numbers the samples, `clipjax.data.femnist_sources`).

  Args:
    folder: a folder with LEAF ``train/*.json`` and ``test/*.json`` files.

  Returns:
    Writers that have both portions in one sample, with uint8 images and int32 labels, sorted.
  """
  samples: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = {}
  for split in ("train", "test"):
    for file in sorted((pathlib.Path(folder) / split).glob("*.json")):
      sample = file.name.rsplit("__", 1)[0] if "__" in file.name else ""
      found = samples.setdefault(sample, {"train": {}, "test": {}})[split]
      with open(file, encoding="utf-8") as f:
        blob = json.load(f)
      for user in blob["users"]:
        data = blob["user_data"][user]
        x = _leaf_pixels(data["x"], f"{file} user {user}")
        y = np.asarray(data["y"], dtype=np.int32)
        if len(x) != len(y):
          raise ValueError(f"{file} user {user}: {len(x)} images but {len(y)} labels.")
        if user not in found or len(found[user][1]) < len(y):
          found[user] = (x, y)
  best: dict[str, tuple[int, str]] = {}
  for sample in sorted(samples):
    train, test = samples[sample]["train"], samples[sample]["test"]
    for user in set(train) & set(test):
      size = len(train[user][1]) + len(test[user][1])
      if user not in best or size > best[user][0]:
        best[user] = (size, sample)
  out = {}
  for user in sorted(best):
    portions = samples[best[user][1]]
    out[user] = {
        "x_train": portions["train"][user][0], "y_train": portions["train"][user][1],
        "x_test": portions["test"][user][0], "y_test": portions["test"][user][1],
    }
  return out


def read_npz(file: pathlib.Path) -> dict[str, dict[str, np.ndarray]]:
  """Reads the packed 300-writer npz into ``{writer: {x_train, y_train, x_test, y_test}}``."""
  with np.load(file) as d:
    writers = [str(w) for w in d["writers"]]
    arrays = {k: d[k] for k in ("x_train", "y_train", "w_train", "x_test", "y_test", "w_test")}
  out = {}
  for i, w in enumerate(writers):
    client = {}
    for split in ("train", "test"):
      rows = arrays[f"w_{split}"] == i
      client[f"x_{split}"] = arrays[f"x_{split}"][rows].reshape((-1,) + IMAGE_SHAPE)
      client[f"y_{split}"] = arrays[f"y_{split}"][rows].astype(np.int32)
    out[w] = client
  return dict(sorted(out.items()))


class ClipjaxFemnist(tfds_store.ManualBuilder):
  """LEAF FEMNIST, one record per writer, from the packed npz or a LEAF JSON folder."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="npz", description="LEAF 300-writer packed npz."),
      tfds.core.BuilderConfig(name="leaf_json", description="LEAF train/ and test/ JSON."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = paths.HOW_TO_GET["femnist"]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="LEAF FEMNIST, one record per writer (uint8, 255 = background).",
        features=tfds.features.FeaturesDict({
            "writer": tfds.features.Text(),
            "x": tfds.features.Tensor(
                shape=(None,) + IMAGE_SHAPE, dtype=np.uint8,
                encoding=tfds.features.Encoding.BYTES),
            "y": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    manual = pathlib.Path(dl_manager.manual_dir)
    if self.builder_config.name == "npz":
      writers = read_npz(manual / pathlib.Path(NPZ_FILE).name)
    else:
      writers = read_leaf_folder(manual)
    return {s: self._generate_examples(writers, s) for s in ("train", "test")}

  def _generate_examples(self, writers, split):
    for i, (w, d) in enumerate(writers.items()):
      yield i, {"writer": w, "x": d[f"x_{split}"], "y": d[f"y_{split}"]}


def load_clients(data_dir: str | pathlib.Path | None = None) -> tfds_store.ClientLists:
  """Prepares (once per content of the raw files) and reads FEMNIST clients.

  Args:
    data_dir: None to search the data folders for ``femnist/<npz>``, else for
      ``femnist/leaf_json/`` (what ``scripts/download_data.py femnist`` writes); a LEAF folder
      (``train/*.json``, ``test/*.json``) to read it; or a raw data folder holding either.

  Returns:
    Per-writer arrays ordered by writer id, with the raw files' fingerprint.

  Raises:
    FileNotFoundError: if no source is found (names the file, the folders searched and
      ``scripts/download_data.py``).
  """
  if data_dir is not None and is_leaf_folder(pathlib.Path(data_dir)):
    manual, config = pathlib.Path(data_dir).resolve(), "leaf_json"
  else:
    found = paths.locate_first(RAW_FILES, "femnist", data_dir)
    if found.name == pathlib.Path(NPZ_FILE).name:
      manual, config = found.parent, "npz"
    else:
      manual, config = found, "leaf_json"
  raw_files = ([manual / pathlib.Path(NPZ_FILE).name] if config == "npz"
               else sorted(manual.glob("t*/*.json")))
  builder, seconds, source = tfds_store.prepared_builder(
      ClipjaxFemnist, data_dir=paths.tfds_dir(), manual_dir=manual, raw_files=raw_files,
      config=config,
  )
  train = tfds_store.read_split(builder, "train")
  test = tfds_store.read_split(builder, "test")
  return tfds_store.ClientLists(
      client_ids=tuple(tfds_store.as_text(r["writer"]) for r in train),
      train_x=[r["x"] for r in train],
      train_y=[r["y"] for r in train],
      test_x=[r["x"] for r in test],
      test_y=[r["y"] for r in test],
      prepare_seconds=seconds,
      source=source,
  )
