"""Federated data packed into fixed shapes with a ``valid`` mask.

Every client of a split is padded to the same shape so all clients form one array with a leading
client axis C (``jax.vmap``-able, one XLA computation for all clients):

* images: ``x`` uint8 [C, N_max, H, W, ch], ``y`` int32 [C, N_max], ``valid`` bool [C, N_max];
* text: ``x`` uint8 [C, L_max] symbol ids of each client's text, ``y`` int32 [C, 0] (labels come
  from ``x``), ``valid`` bool [C, N_max] marking window starts, N_max = L_max - seq_len.

``valid`` is always a prefix of each row and ``num_examples = valid.sum(1)``; padding is zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax
import jax
import numpy as np


@flax.struct.dataclass
class ClientArrays:
  """One split of the chosen clients, packed; leading axis C = clients.

  Attributes:
    x: images uint8 [C, N_max, H, W, ch] (raw LEAF/JPEG values, not scaled), or text uint8
      [C, L_max] symbol ids, zero padded.
    y: images int32 [C, N_max] labels (0 in padding); text int32 [C, 0] (unused).
    valid: bool [C, N_max]; images: real image slots; text: real window starts. A prefix.
    num_examples: int32 [C], ``valid.sum(1)``.
  """

  x: jax.Array | np.ndarray
  y: jax.Array | np.ndarray
  valid: jax.Array | np.ndarray
  num_examples: jax.Array | np.ndarray


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """A federated dataset: the chosen clients' train and test splits, packed.

  Attributes:
    name: dataset name ("femnist", "shakespeare", "cifar10").
    kind: "images" or "text".
    train: the train split of the chosen clients.
    test: the test split of the same clients (same order).
    client_ids: one id per client row (LEAF writer / play_role / CIFAR partition index).
    num_classes: 62 / 80 / 10.
    input_shape: per example as the model sees it: (28, 28, 1) / (80,) / (32, 32, 3).
    seq_len: window length for text (80), 0 for images.
    source: the raw data files read and their sha256 (``{"files": [...], "sha256": ...}``);
      None when tfds' own prepared dataset was read.
  """

  name: str
  kind: str
  train: ClientArrays
  test: ClientArrays
  client_ids: tuple[str, ...]
  num_classes: int
  input_shape: tuple[int, ...]
  seq_len: int = 0
  source: dict | None = None


def pack_images(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> ClientArrays:
  """Packs per-client images [N_c, H, W, ch] and labels [N_c] into fixed shapes (host side).

  Args:
    xs: per client uint8 images [N_c, H, W, ch]; all clients share H, W, ch.
    ys: per client int labels [N_c].

  Returns:
    ClientArrays with N_max = max N_c (at least 1 so shapes are never empty).
  """
  if len(xs) != len(ys) or not xs:
    raise ValueError(f"Need the same positive number of image and label arrays, got "
                     f"{len(xs)} and {len(ys)}.")
  counts = np.array([len(x) for x in xs], dtype=np.int32)
  n_max = max(int(counts.max()), 1)
  x = np.zeros((len(xs), n_max) + tuple(xs[0].shape[1:]), dtype=np.uint8)
  y = np.zeros((len(xs), n_max), dtype=np.int32)
  for c, (xc, yc) in enumerate(zip(xs, ys)):
    if len(xc) != len(yc):
      raise ValueError(f"Client {c}: {len(xc)} images but {len(yc)} labels.")
    x[c, : len(xc)] = xc
    y[c, : len(yc)] = yc
  valid = np.arange(n_max)[None, :] < counts[:, None]
  return ClientArrays(x=x, y=y, valid=valid, num_examples=counts)


def pack_text(texts: Sequence[np.ndarray], seq_len: int) -> ClientArrays:
  """Packs per-client symbol-id texts [L_c] into fixed shapes (host side).

  A text of length L_c holds max(L_c - seq_len, 0) windows (start i: inputs
  ``text[i : i + seq_len]``, label ``text[i + seq_len]``).

  Args:
    texts: per client uint8 symbol ids [L_c].
    seq_len: window length.

  Returns:
    ClientArrays with x [C, L_max], valid [C, L_max - seq_len] (at least one column).
  """
  if not texts:
    raise ValueError("Need at least one client text to pack.")
  lengths = np.array([len(t) for t in texts], dtype=np.int64)
  l_max = max(int(lengths.max()), seq_len + 1)
  x = np.zeros((len(texts), l_max), dtype=np.uint8)
  for c, t in enumerate(texts):
    x[c, : len(t)] = t
  counts = np.maximum(lengths - seq_len, 0).astype(np.int32)
  valid = np.arange(l_max - seq_len)[None, :] < counts[:, None]
  y = np.zeros((len(texts), 0), dtype=np.int32)
  return ClientArrays(x=x, y=y, valid=valid, num_examples=counts)
