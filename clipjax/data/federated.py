"""``load_federated``: the one entry point the training loop calls (host side).

It prepares the dataset's tfds records once (see :mod:`clipjax.data.paths` for where), reads
them, chooses clients as a pure function of the seed and packs them into fixed shapes.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from clipjax.data import cifar10, femnist, packing, shakespeare, tfds_store
from clipjax.data import partition as partition_lib

DATASETS = ("femnist", "shakespeare", "cifar10")
PARTITIONS = ("iid", "dirichlet")
TEST_CLIENTS = ("chosen", "all")  # whose test data the model is evaluated on
DEFAULT_CIFAR10_CLIENTS = 100


def choose_clients(num_available: int, num_clients: int | None, seed: int) -> np.ndarray:
  """Sorted indices of ``num_clients`` of ``num_available`` clients, a pure function of seed.

  Raises:
    ValueError: if ``num_clients`` is not in [1, num_available].
  """
  if num_clients is None:
    return np.arange(num_available)
  if not 1 <= num_clients <= num_available:
    raise ValueError(f"num_clients must be in [1, {num_available}] (clients available), "
                     f"got {num_clients}.")
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_available, size=num_clients, replace=False))


def load_federated(
    name: str,
    *,
    num_clients: int | None,
    seed: int,
    data_dir: str | os.PathLike | None = None,
    partition: str = "iid",
    alpha: float = 0.5,
    min_examples: int = 1,
    num_partitions: int | None = None,
    test_clients: str = "chosen",
    max_examples: int = 0,
) -> packing.FederatedData:
  """Loads a federated dataset, packed as ``[C, N_max, ...]`` with a ``valid`` mask.

  Args:
    name: "femnist" (LEAF, one client per writer), "shakespeare" (LEAF, one client per
      speaking role per play) or "cifar10" (partitioned over clients).
    num_clients: how many clients; None = all (FEMNIST, Shakespeare) or 100 partitions
      (CIFAR-10). FEMNIST/Shakespeare: that many clients chosen with
      ``default_rng(seed).choice`` (sorted) among those with >= ``min_examples`` train
      examples. CIFAR-10: the number of partitions (all are returned).
    seed: seeds client choice (and the CIFAR-10 partition).
    data_dir: raw data folder (holding ``femnist/``, ``shakespeare/``, ``cifar10/``) instead of
      the search path; for FEMNIST also a LEAF folder with ``train/*.json``, ``test/*.json``.
    partition: CIFAR-10 only: "iid" or "dirichlet".
    alpha: CIFAR-10 Dirichlet concentration.
    min_examples: drop clients with fewer train examples before choosing.
    num_partitions: CIFAR-10 only: partition the data over this many clients and choose
      ``num_clients`` of them by seed (default: ``num_clients`` partitions, all returned).
    test_clients: "chosen": the test data of the chosen clients (one row each); "all": the
      test data of every client of the dataset (FEMNIST: every writer, Shakespeare: every
      role, CIFAR-10: the whole test set), a larger and fixed evaluation set whatever clients
      are chosen. Only the pooled test accuracy is comparable between the two.
    max_examples: FEMNIST/Shakespeare: keep at most this many train examples per chosen
      client (0: all), drawn with ``default_rng(seed)``: FEMNIST a random subset of its
      images, Shakespeare a random contiguous block of its windows (its text from a random
      offset). Bounds the padded shapes, which the largest client sets. Test data is not cut.

  Returns:
    The packed FederatedData.

  Raises:
    ValueError: unknown name/partition, bad counts; FileNotFoundError: missing raw files.
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
  if partition not in PARTITIONS:
    raise ValueError(f"Unknown partition {partition!r}; known: {', '.join(PARTITIONS)}.")
  if test_clients not in TEST_CLIENTS:
    raise ValueError(f"Unknown test_clients {test_clients!r}; known: {', '.join(TEST_CLIENTS)}.")
  for key, value in (("min_examples", min_examples), ("max_examples", max_examples)):
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise ValueError(f"{key} must be a non-negative integer, got {value!r}.")
  if name == "cifar10":
    if max_examples:
      raise ValueError("max_examples cuts FEMNIST/Shakespeare clients; a CIFAR-10 partition's "
                       "size is set by num_partitions (set data.max_examples=0).")
    return _load_cifar10(num_clients, seed, data_dir, partition, alpha, min_examples,
                         num_partitions, test_clients)
  if name == "femnist":
    clients = femnist.load_clients(data_dir)
    kind, num_classes, seq_len = "images", femnist.NUM_CLASSES, 0
    input_shape = femnist.IMAGE_SHAPE
  else:
    clients = shakespeare.load_clients(data_dir)
    kind, num_classes, seq_len = "text", shakespeare.NUM_SYMBOLS, shakespeare.SEQ_LEN
    input_shape = (seq_len,)
  counts = np.array([_count(kind, x, seq_len) for x in clients.train_x])
  eligible = np.flatnonzero(counts >= min_examples)
  if len(eligible) == 0:
    raise ValueError(f"No {name} client has min_examples={min_examples} train examples.")
  chosen = eligible[choose_clients(len(eligible), num_clients, seed)]
  if max_examples:
    clients = _capped(clients, chosen, kind, seq_len, max_examples, seed)
  train, test = _pack(kind, clients, chosen, seq_len,
                      np.arange(len(clients.client_ids)) if test_clients == "all" else chosen)
  return packing.FederatedData(
      name=name, kind=kind, train=train, test=test,
      client_ids=tuple(clients.client_ids[i] for i in chosen),
      num_classes=num_classes, input_shape=tuple(input_shape), seq_len=seq_len,
      source=None if clients.source is None else clients.source.as_dict(),
  )


def _count(kind: str, x: np.ndarray, seq_len: int) -> int:
  return len(x) if kind == "images" else max(len(x) - seq_len, 0)


def _capped(clients: tfds_store.ClientLists, chosen, kind: str, seq_len: int, cap: int, seed: int):
  """`clients` with the train data of each `chosen` client cut to at most `cap` examples."""
  rng = np.random.default_rng([seed, 0x6361])
  train_x = list(clients.train_x)
  train_y = None if clients.train_y is None else list(clients.train_y)
  for i in chosen:
    n = _count(kind, train_x[i], seq_len)
    if n <= cap:
      continue
    if kind == "images":
      keep = np.sort(rng.choice(n, size=cap, replace=False))
      train_x[i], train_y[i] = train_x[i][keep], train_y[i][keep]
    else:  # text: windows start at offsets 0..n-1; keep `cap` consecutive ones
      start = int(rng.integers(0, n - cap + 1))
      train_x[i] = train_x[i][start:start + cap + seq_len]
  return dataclasses.replace(clients, train_x=train_x, train_y=train_y)


def _pack(kind, clients: tfds_store.ClientLists, chosen, seq_len, tested):
  if kind == "images":
    train = packing.pack_images([clients.train_x[i] for i in chosen],
                                [clients.train_y[i] for i in chosen])
    test = packing.pack_images([clients.test_x[i] for i in tested],
                               [clients.test_y[i] for i in tested])
  else:
    train = packing.pack_text([clients.train_x[i] for i in chosen], seq_len)
    test = packing.pack_text([clients.test_x[i] for i in tested], seq_len)
  return train, test


def _load_cifar10(num_clients, seed, data_dir, partition, alpha, min_examples, num_partitions=None,
                  test_clients="chosen"):
  """CIFAR-10: train partitioned over clients; the test set is split IID over the same clients.

  The union of all partitions' test parts is the whole test set (`test_clients="all"`), so
  summed test counts give the usual global test accuracy.
  """
  num_clients = DEFAULT_CIFAR10_CLIENTS if num_clients is None else num_clients
  chosen_count = num_clients
  if num_partitions is not None:
    if num_partitions < num_clients:
      raise ValueError(f"num_partitions={num_partitions} must be >= num_clients={num_clients}.")
    num_clients = num_partitions
  (x_train, y_train), (x_test, y_test), source = cifar10.load(data_dir)
  if partition == "iid":
    if len(y_train) // max(num_clients, 1) < min_examples:
      raise ValueError(f"An IID partition over {num_clients} clients gives fewer than "
                       f"min_examples={min_examples} train examples per client.")
    parts = partition_lib.partition_iid(y_train, num_clients, seed)
  else:
    parts = partition_lib.partition_dirichlet(
        y_train, num_clients, alpha, seed, min_size=max(min_examples, 1))
  test_parts = partition_lib.partition_iid(y_test, num_clients, seed + 1)
  chosen = choose_clients(num_clients, chosen_count, seed)
  parts = [parts[c] for c in chosen]
  if test_clients == "chosen":
    test_parts = [test_parts[c] for c in chosen]
  train = packing.pack_images([x_train[p] for p in parts], [y_train[p] for p in parts])
  test = packing.pack_images([x_test[p] for p in test_parts], [y_test[p] for p in test_parts])
  return packing.FederatedData(
      name="cifar10", kind="images", train=train, test=test,
      client_ids=tuple(f"{partition}_{c:04d}" for c in chosen),
      num_classes=cifar10.NUM_CLASSES, input_shape=cifar10.IMAGE_SHAPE, seq_len=0,
      source=None if source is None else source.as_dict(),
  )
