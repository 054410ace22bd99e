"""Communication graphs of SecAgg (complete) and SecAgg+ (randomly labelled Harary graph).

SecAgg+ uses the Harary graph H(n, k): clients on a ring, each linked to its floor(k/2) nearest
neighbours on either side (plus the opposite node when k is odd, which needs n even), with the
ring positions given to clients by a uniformly random permutation. It is k-regular and, because the labels are random, each client's neighbour set is a uniformly
random k-subset of the others: the property the failure bounds of
:mod:`clipjax.secagg.params` rely on. (k, t) themselves come from that module.

Where the permutation's randomness comes from (:data:`GRAPH_RANDOMNESS`, DESIGN 2.6):

* ``committed`` (the default): :func:`committed_seed`, the SHA-256 of the round index, n, k
  and every advertised client's 16-byte graph nonce, which each client sends with its public keys
  in AdvertiseKeys. The graph is fixed only once the round's participants have committed, so
  colluders must be chosen before it is known (the non-adaptive corruption the analysis of
  :mod:`clipjax.secagg.params` assumes). A deployment draws the nonces from the OS; a seeded
  simulation derives them from (seed, round, client) (:func:`simulated_nonce`): public randomness,
  not key material, so the run stays reproducible.
* ``seed``: the permutation drawn from the round's seed alone, as runs stored before
  ``committed`` existed were (anyone who knows the seed knows every round's graph in advance:
  for reproducing those runs only).

The constants used before the analysis existed stay reachable under names that say what they
are: :func:`heuristic_degree_2log2n` and :func:`heuristic_threshold_majority`. They are not
security-analysed (e.g. n = 50 with 20% colluders: P[some honest client's secrets leak] <= 3.2e-2
by the union bound of :mod:`clipjax.secagg.params`), so setup_round accepts them only with
``allow_weak=True`` where they miss the target.

References:
  J. Bell, K. Bonawitz, A. Gascon, T. Lepoint, M. Raykova. Secure Single-Server Aggregation with
  (Poly)Logarithmic Overhead. CCS 2020.
  F. Harary. The Maximum Connectivity of a Graph. PNAS 48(7), 1962.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping

import numpy as np

from clipjax.secagg import checks
from clipjax.secagg.params import PROTOCOLS


def check_protocol(protocol: str) -> str:
  if not isinstance(protocol, str) or protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r} is unknown; allowed: {PROTOCOLS}")
  return protocol


def _count(name: str, value, least: int) -> int:
  if not checks.is_integer(value) or value < least:
    raise ValueError(f"{name}={value!r} must be an integer >= {least}")
  return int(value)


def heuristic_degree_2log2n(num_clients: int) -> int:
  """k = min(n - 1, 2 ceil(log2 n)), lowered by one if n k is odd. Not security-analysed."""
  num_clients = _count("num_clients", num_clients, 2)
  k = min(num_clients - 1, 2 * math.ceil(math.log2(num_clients)))
  return k - 1 if (num_clients * k) % 2 else k


def heuristic_threshold_majority(degree: int) -> int:
  """t = floor((k + 1) / 2) + 1, a majority of a client's k + 1 share holders. Not analysed."""
  return (_count("degree", degree, 1) + 1) // 2 + 1


GRAPH_RANDOMNESS = ("committed", "seed")
GRAPH_NONCE_BYTES = 16
_GRAPH_DOMAIN = b"clipjax/secagg/v1/graph"
_NONCE_DOMAIN = b"clipjax/secagg/v1/simulated-graph-nonce"


def check_graph_randomness(value) -> str:
  if not isinstance(value, str) or value not in GRAPH_RANDOMNESS:
    raise ValueError(f"graph_randomness={value!r} is unknown; allowed: {GRAPH_RANDOMNESS} "
                     "(committed: from the advertised clients' nonces; seed: the round's seed "
                     "alone, as runs stored before it)")
  return value


def simulated_nonce(seed: int, round_index: int, client: int) -> bytes:
  """Client ``client``'s graph nonce in a seeded simulation: SHA-256 of (seed, round, client),
  truncated to :data:`GRAPH_NONCE_BYTES`. A deployment draws it from the OS instead."""
  data = _NONCE_DOMAIN + struct.pack("<QQQ", seed % 2 ** 64, round_index, client)
  return hashlib.sha256(data).digest()[:GRAPH_NONCE_BYTES]


def committed_seed(round_index: int, num_clients: int, degree: int,
                   nonces: Mapping[int, bytes]) -> int:
  """The graph labels' seed once every advertised client has committed its nonce.

  SHA-256 over a domain label, (round, n, k) and the (id, nonce) pairs in id order, read as a
  256-bit integer. Every client can recompute it from the nonces the server forwards, and any
  one honest client's fresh nonce makes it unpredictable before AdvertiseKeys ends.

  Raises:
    ValueError: for a nonce that is not :data:`GRAPH_NONCE_BYTES` bytes.
  """
  h = hashlib.sha256(_GRAPH_DOMAIN + struct.pack("<QQQ", round_index, num_clients, degree))
  for u in sorted(nonces):
    nonce = nonces[u]
    if not isinstance(nonce, bytes) or len(nonce) != GRAPH_NONCE_BYTES:
      raise ValueError(f"client {u}'s graph nonce must be {GRAPH_NONCE_BYTES} bytes, got "
                       f"{nonce!r}")
    h.update(struct.pack("<Q", u) + nonce)
  return int.from_bytes(h.digest(), "little")


def complete_graph(num_clients: int) -> np.ndarray:
  """Edges ``[E, 2]`` int32 (lo < hi) of the complete graph."""
  lo, hi = np.triu_indices(_count("num_clients", num_clients, 1), k=1)
  return np.stack([lo, hi], axis=1).astype(np.int32)


def random_harary_graph(num_clients: int, degree: int, seed: int | None) -> np.ndarray:
  """Edges ``[E, 2]`` int32 (lo < hi) of H(n, k) with uniformly random client labels.

  Args:
    num_clients: n.
    degree: k in [1, n - 1]; n * k must be even.
    seed: seed of the (public) label permutation (e.g. :func:`committed_seed`); None draws it
      from the OS.

  Raises:
    ValueError: if no such graph exists (k outside [1, n - 1], or n * k odd), or for a seed that
      is not a non-negative integer or None.
  """
  n = _count("num_clients", num_clients, 2)
  if not checks.is_integer(degree):
    raise ValueError(f"degree={degree!r} must be an integer in [1, {n - 1}]")
  k = int(degree)
  if seed is not None and (not checks.is_integer(seed) or seed < 0):
    raise ValueError(f"seed={seed!r} must be a non-negative integer or None (OS randomness)")
  if not 1 <= k <= n - 1:
    raise ValueError(f"degree={k} must be in [1, {n - 1}] for num_clients={n}")
  if (n * k) % 2:
    raise ValueError(f"no {k}-regular graph on {n} nodes: num_clients * degree must be even")
  if k == n - 1:
    return complete_graph(n)
  offsets = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
  ring = np.arange(n)
  ring_edges = np.concatenate([np.stack([ring, (ring + o) % n], axis=1) for o in offsets])
  if k % 2:  # the diameter chords (u, u + n/2) appear twice above
    ring_edges = ring_edges[: n * (k // 2) + n // 2]
  labels = np.random.default_rng(seed).permutation(n)
  out = np.sort(labels[ring_edges], axis=1)
  return out[np.lexsort((out[:, 1], out[:, 0]))].astype(np.int32)


def neighbour_lists(num_clients: int, edges: np.ndarray) -> list[tuple[int, ...]]:
  """Each client's sorted neighbours in the graph of ``edges`` (integer ``[E, 2]``).

  Raises:
    ValueError: for edges that are not an integer ``[E, 2]`` array of ids in [0, num_clients).
  """
  num_clients = _count("num_clients", num_clients, 1)
  arr = np.asarray(edges) if isinstance(edges, (np.ndarray, list, tuple)) else None
  if arr is None or arr.ndim != 2 or arr.shape[1] != 2 or (
      arr.size and not np.issubdtype(arr.dtype, np.integer)):
    shape = "" if arr is None else f" {arr.dtype}{arr.shape}"
    raise ValueError(f"edges must be an integer [E, 2] array of client-id pairs; got "
                     f"{type(edges).__name__}{shape}")
  bad = arr[((arr < 0) | (arr >= num_clients)).any(axis=1)]
  if bad.size:
    raise ValueError(f"edges {bad.tolist()[:4]} have client ids outside [0, {num_clients})")
  nbrs: list[list[int]] = [[] for _ in range(num_clients)]
  for u, v in arr.tolist():
    nbrs[u].append(v)
    nbrs[v].append(u)
  return [tuple(sorted(x)) for x in nbrs]
