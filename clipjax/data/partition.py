"""Splitting a centralised labelled dataset over clients: IID and Dirichlet(alpha) label skew.

Both are pure functions of their arguments (NumPy ``default_rng(seed)``): the same seed gives the
same partition. They return one sorted int64 index array per client; the arrays are disjoint and
together cover every example.

References:
  Hsu, Qi, Brown. Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification. arXiv:1909.06335, 2019 (Dirichlet label partition).
"""

from __future__ import annotations

import numpy as np


def _check(labels: np.ndarray, num_clients: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
  if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
    raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}.")
  if num_clients > len(labels):
    raise ValueError(f"num_clients={num_clients} exceeds the {len(labels)} examples.")
  return labels


def partition_iid(labels: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
  """Shuffles the examples and deals them into ``num_clients`` parts whose sizes differ by <= 1.

  Args:
    labels: int [N] labels (only the length is used).
    num_clients: number of parts.
    seed: NumPy seed.

  Returns:
    ``num_clients`` sorted index arrays.
  """
  labels = _check(labels, num_clients)
  order = np.random.default_rng(seed).permutation(len(labels))
  return [np.sort(part) for part in np.array_split(order, num_clients)]


def partition_dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 10,
    max_tries: int = 1000,
) -> list[np.ndarray]:
  """Label-skewed partition: each class is split over clients with Dirichlet(alpha) shares.

  For every class, client shares q ~ Dir(alpha * 1) decide how the class's (shuffled) examples
  are cut. Draws repeat until every client holds at least ``min_size`` examples (the usual
  rule of the Dirichlet benchmark code). Smaller alpha gives more skew; alpha -> inf tends to
  IID.

  Args:
    labels: int [N] class labels.
    num_clients: number of clients.
    alpha: Dirichlet concentration, > 0.
    seed: NumPy seed.
    min_size: minimum examples per client.
    max_tries: redraws allowed before giving up.

  Returns:
    ``num_clients`` sorted index arrays.

  Raises:
    ValueError: for alpha <= 0, min_size * num_clients > N, or no valid draw in max_tries.
  """
  labels = _check(labels, num_clients)
  if not np.isfinite(alpha) or alpha <= 0:
    raise ValueError(f"alpha must be a positive finite number, got {alpha!r}.")
  if min_size < 0 or min_size * num_clients > len(labels):
    raise ValueError(f"min_size={min_size} x num_clients={num_clients} exceeds the "
                     f"{len(labels)} examples.")
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  for _ in range(max_tries):
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for k in classes:
      members = rng.permutation(np.flatnonzero(labels == k))
      shares = rng.dirichlet(np.full(num_clients, float(alpha)))
      cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
      for c, piece in enumerate(np.split(members, cuts)):
        parts[c].append(piece)
    sizes = [sum(len(p) for p in client) for client in parts]
    if min(sizes) >= min_size:
      return [np.sort(np.concatenate(client)).astype(np.int64) for client in parts]
  raise ValueError(
      f"No Dirichlet(alpha={alpha}) partition over {num_clients} clients gave every client "
      f">= {min_size} examples in {max_tries} draws; lower min_size or raise alpha."
  )


def label_skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
  """Mean total-variation distance between each client's label histogram and the global one.

  0 for perfectly balanced clients; approaches 1 - 1/K as clients hold single classes.
  """
  labels = np.asarray(labels)
  classes = np.unique(labels)
  global_hist = np.array([(labels == k).mean() for k in classes])
  distances = []
  for part in parts:
    if len(part) == 0:
      continue
    hist = np.array([(labels[part] == k).mean() for k in classes])
    distances.append(0.5 * np.abs(hist - global_hist).sum())
  return float(np.mean(distances))
