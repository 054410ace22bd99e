"""Communication graphs of SecAgg (complete) and SecAgg+ (random k-regular), and defaults.

Defaults (documented here, used by ``setup_round``):
  * SecAgg+ degree ``k = min(n - 1, 2 * ceil(log2 n))``: Bell et al. show that a random graph of
    degree O(log n) keeps the sum private and correct with high probability; 2 log2 n is the
    constant they use in their experiments' regime (n = 20 -> 10, n = 50 -> 12, n = 200 -> 16).
  * threshold ``t = floor(h / 2) + 1`` where ``h = k + 1`` is the number of holders of a client's
    shares (itself and its k neighbours; for SecAgg k = n - 1, so h = n): an honest majority of
    holders is needed to reconstruct, as in Bonawitz et al.'s honest-but-curious setting.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell, K. Bonawitz, A. Gascon, T. Lepoint, M. Raykova. Secure Single-Server Aggregation with
  (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import math

import numpy as np

PROTOCOLS = ("secagg", "secagg+")


def check_protocol(protocol: str) -> str:
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r} is unknown; allowed: {PROTOCOLS}")
  return protocol


def default_degree(num_clients: int) -> int:
  return min(num_clients - 1, 2 * math.ceil(math.log2(max(num_clients, 2))))


def default_threshold(degree: int) -> int:
  return (degree + 1) // 2 + 1


def complete_graph(num_clients: int) -> np.ndarray:
  """Edges ``[E, 2]`` int32 (lo < hi) of the complete graph."""
  lo, hi = np.triu_indices(num_clients, k=1)
  return np.stack([lo, hi], axis=1).astype(np.int32)


def random_regular_graph(num_clients: int, degree: int, seed: int) -> np.ndarray:
  """Edges ``[E, 2]`` int32 (lo < hi) of a random ``degree``-regular simple graph.

  Starts from a circulant graph (offsets 1..k/2, plus n/2 for odd k) and randomises it with
  10 E degree-preserving double-edge swaps, a Markov chain whose stationary law is uniform over
  k-regular graphs; then relabels the nodes by a random permutation.

  Raises:
    ValueError: if no such graph exists (k >= n, or n * k odd).
  """
  n, k = num_clients, degree
  if not 1 <= k <= n - 1:
    raise ValueError(f"degree={k} must be in [1, {n - 1}] for num_clients={n}")
  if (n * k) % 2:
    raise ValueError(f"no {k}-regular graph on {n} nodes: num_clients * degree must be even")
  if k == n - 1:
    return complete_graph(n)
  rng = np.random.default_rng(seed)
  offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
  edges = {tuple(sorted((u, (u + o) % n))) for u in range(n) for o in offsets}
  edge_list = sorted(edges)
  for _ in range(10 * len(edge_list)):
    i, j = rng.integers(len(edge_list), size=2)
    (a, b), (c, d) = edge_list[i], edge_list[j]
    if rng.random() < 0.5:
      c, d = d, c
    new1, new2 = tuple(sorted((a, d))), tuple(sorted((c, b)))
    if a == d or c == b or new1 == new2 or new1 in edges or new2 in edges:
      continue
    edges -= {edge_list[i], edge_list[j]}
    edges |= {new1, new2}
    edge_list[i], edge_list[j] = new1, new2
  perm = rng.permutation(n)
  out = np.sort(perm[np.array(edge_list)], axis=1)
  return out[np.lexsort((out[:, 1], out[:, 0]))].astype(np.int32)


def neighbour_lists(num_clients: int, edges: np.ndarray) -> list[tuple[int, ...]]:
  nbrs: list[list[int]] = [[] for _ in range(num_clients)]
  for u, v in edges.tolist():
    nbrs[u].append(v)
    nbrs[v].append(u)
  return [tuple(sorted(x)) for x in nbrs]
