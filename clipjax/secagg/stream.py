"""One round's secure sum, streamed by chunks of clients: ShareKeys, MaskedInputCollection and
Unmasking (SecAgg, SecAgg+).

:class:`SecureSumStream` is a short driver over the stages: the host side of each one (who takes
part, which seeds blind what, share sealing and reconstruction) is :mod:`clipjax.secagg.stages`;
the device side (blinding, the server sum, unblinding) is :mod:`clipjax.secagg.blinding`, jitted
here; :mod:`clipjax.secagg.aggregate` validates the arguments and decodes the sum. The stream is
fed chunk by chunk: client u's masked input depends only on its own seeds and its edges inside
U2, not on whether its neighbours send, so the masked inputs of any group of clients can be
computed and summed on their own, and the server's uint32 total is the same however the senders
are split. Live memory is one chunk's ``[N, D + 1]`` words plus the keystream budget, never
``C x D``. A chunk's side (its :class:`ChunkKeys`, encoding, blinding and
:func:`masked_partial`, which another process can run) is :mod:`clipjax.secagg.chunk_input`;
:func:`secure_sum` is the stream fed with all clients at once.

The setup's ``simulate`` mode (:data:`clipjax.secagg.SIMULATE_MODES`) picks what runs: under
``sum`` the stages make the protocol's public decisions without secrets and the chunks are
encoded, not blinded, so the server's total is already the unmasked sum
(:mod:`clipjax.secagg.fast_sum`); under ``verify`` a ``sum`` twin is fed the same updates and
checked against the protocol.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import blinding, chunk_input, fast_sum, planes, stages
from clipjax.secagg import params as params_lib
from clipjax.secagg.aggregate import (SecAggStats, SecureSumResult, check_dim,
                                      check_options, check_rng, decode_sum, noise_keys,
                                      setup_for, updates_shape)
from clipjax.secagg.chunk_input import ChunkKeys
from clipjax.secagg.protocol import STAGES, Dropouts, RoundAborted, RoundSetup


_accumulate = jax.jit(lambda total, messages, sent: total + blinding.server_sum(messages, sent))
_unblind = jax.jit(blinding.unblind, static_argnames=("chunk_words",))


@contextlib.contextmanager
def _timer(seconds: dict[str, float], name: str):
  """Adds the host seconds the ``with`` body took to ``seconds[name]`` (unless it raises)."""
  start = time.perf_counter()
  yield
  seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def _unmasked_sum(total: jax.Array, unmasking: stages.UnmaskingKeys,
                  budget_words: int) -> np.ndarray:
  """Unmasking on the device: uint32 ``[D + 1]`` sum of the senders' encoded inputs."""
  chunk = blinding.chunk_words_for(len(unmasking.self_keys) + len(unmasking.edge_keys),
                                   total.shape[0], budget_words)
  return np.asarray(_unblind(total, jnp.asarray(unmasking.self_keys),
                             jnp.asarray(unmasking.edge_keys),
                             jnp.asarray(unmasking.edge_negated), chunk_words=chunk))


def _dropped(setup: RoundSetup, shared: stages.SharedKeys, masked: stages.MaskedInput,
             unmasking: stages.UnmaskingKeys | stages.UnmaskingPlan
             ) -> dict[str, tuple[int, ...]]:
  """Stage -> sorted ids that dropped out at that stage (the drop-out spec, as it acted)."""
  advertised = set(setup.advertised)
  return {"advertise_keys": tuple(sorted(set(range(setup.num_clients)) - advertised)),
          "share_keys": tuple(sorted(setup.dropouts["share_keys"] & advertised)),
          "masked_input": tuple(sorted(setup.dropouts["masked_input"] & set(shared.clients))),
          "unmasking": tuple(sorted(set(masked.senders) - set(unmasking.revealers)))}


class SecureSumStream:
  """One round's secure sum fed chunk by chunk: memory is bounded by a chunk, not by C.

  ``__init__`` runs ShareKeys; :meth:`add` (or :meth:`client_keys`, :func:`masked_partial` and
  :meth:`add_partial` elsewhere) runs MaskedInputCollection for a chunk of clients and adds
  their masked inputs into the server's running uint32 ``[D + 1]`` total; :meth:`finish` runs
  Unmasking and decodes. Every client of :attr:`clients` must be added exactly once; the result
  is bit-identical to :func:`secure_sum` however the clients are split. A chunk of N ids is
  computed as N rows (those that send nothing are not summed) and its edges are padded to a
  count fixed by N and the public graph, so chunks of one length compile once per C and k.
  The stream keeps no masked inputs in the transcript (``setup.server.masked_inputs``).
  ``setup.simulate`` picks the protocol, its ``sum`` simulation or both (``verify``: a ``sum``
  twin is fed every chunk, and each outcome is checked with :func:`fast_sum.check_same`).

  Attributes:
    setup: the round's :class:`RoundSetup` (used by this stream).
    dim: D, coordinates of each update.
    clients: sorted ids that must be added: U2 less the masked-input drop-outs of the spec.
  """

  def __init__(self, setup: RoundSetup, weights=None, *, max_weight: float | None = None,
               dim: int, bits: int = 16, clip: float = 1.0, rng: jax.Array | None = None,
               budget_words: int = blinding.DEFAULT_BUDGET_WORDS,
               plane: planes.Plane | None = None, noise_ids=None):
    """Validates the round's options and runs ShareKeys.

    Args:
      setup: a :class:`RoundSetup` from ``setup_round``, not used before.
      weights, max_weight, bits, clip, rng, budget_words: as for :func:`secure_sum`.
      dim: D, coordinates of each update (``1 <= D <= MAX_DIM``).
      plane: sum this bit plane of the codes (:mod:`clipjax.secagg.planes`), masked in its
        ring; :meth:`finish` then returns the plane's exact sum in ``encoded_sum`` and leaves
        the decoding (``total``, ``mean``: empty) to :func:`planes.combine`. None: whole codes.
      noise_ids: int ``[C]``, the id each client's rounding key is folded from (default: its
        id here), so a second instance over some of the clients encodes the same codes.

    Raises:
      ValueError: on a bad setup (or one already used), dim, weights, max_weight, bits, clip,
        rng or budget.
      RoundAborted: if fewer than t clients can share their keys.
      fast_sum.SimulationMismatch: under ``verify``, if ``sum`` decided ShareKeys otherwise.
    """
    if not isinstance(setup, RoundSetup):
      raise ValueError(f"setup={setup!r} must be a RoundSetup from setup_round")
    n = setup.num_clients
    self.dim = check_dim(dim)
    self._clip, self._codes, self._scale = check_options(n, bits, clip, budget_words, weights,
                                                         max_weight)
    rng = check_rng(rng)
    self._bits, self._budget = int(bits), int(budget_words)
    if plane is not None and not isinstance(plane, planes.Plane):
      raise ValueError(f"plane={plane!r} must be a clipjax.secagg.planes.Plane or None")
    if plane is not None and plane.low_bits >= self._bits:
      raise ValueError(f"plane.low_bits={plane.low_bits} must be below bits={bits}")
    if plane is not None and plane.ring < planes.ring_bits(n, plane.which, plane.low_bits,
                                                           self._bits):
      raise ValueError(f"plane.ring={plane.ring} bits cannot hold the sum of {n} clients' "
                       f"{plane.which} planes; use planes.ring_bits")
    self._plane = plane
    if noise_ids is not None:
      noise_ids = np.asarray(noise_ids)
      if noise_ids.shape != (n,) or not np.issubdtype(noise_ids.dtype, np.integer):
        raise ValueError(f"noise_ids must be {n} integer ids, one per client; got "
                         f"{noise_ids.dtype}{noise_ids.shape}")
    if setup.used:
      raise ValueError("setup was already used by a secure sum: pairwise masks must never be "
                       "reused; call setup_round again")
    setup.used = True
    self.setup = setup
    self._blinded = setup.simulate != "sum"
    if rng is None:  # the twin of a verify round must round with the same noise
      rng = jax.random.key(setup.seed if setup.seed is not None else secrets.randbits(63))
    self._seconds = {"advertise_keys": setup.seconds}
    self._twin = None
    if setup.simulate == "verify":
      with _timer(self._seconds, "verify"):
        twin = fast_sum.outcome(lambda: SecureSumStream(
            setup.sum_twin(), weights, max_weight=max_weight, dim=dim, bits=bits, clip=clip,
            rng=rng, budget_words=budget_words, plane=plane, noise_ids=noise_ids))
    self._advertised = stages.advertise_keys_traffic(setup)
    with _timer(self._seconds, "share_keys"):
      shared = fast_sum.outcome(
          lambda: (stages.share_keys if self._blinded else stages.plan_shares)(setup))
    if setup.simulate == "verify":
      fast_sum.check_same(setup.round_index, shared, twin)
      self._twin = twin
    if isinstance(shared, RoundAborted):
      raise shared
    self._shared = shared
    for name in ("masked_input_host", "masked_input_device", "server_sum"):
      self._seconds[name] = 0.0
    with _timer(self._seconds, "masked_input_host"):
      self._noise = np.asarray(noise_keys(rng, n, noise_ids))
      self.clients = stages.expected_senders(setup, self._shared)
      self._expected = np.isin(np.arange(n), self.clients)
      self._edges = stages.inner_edges(setup, self._shared) if self._blinded else None
    self._total = jnp.zeros(self.dim + 1, jnp.uint32)
    self._added = np.zeros(n, bool)
    self._senders: set[int] = set()
    self._nonfinite: set[int] = set()
    self._finished = False

  def _check_open(self) -> None:
    if self._finished:
      raise ValueError("this SecureSumStream is finished; a round sums once: start the next "
                       "one with setup_round and a new stream")

  def _check_ids(self, ids, name: str = "ids") -> np.ndarray:
    """int64 ``[N]`` distinct client ids in [0, C) that were not added before."""
    n = self.setup.num_clients
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
      raise ValueError(f"{name} must be a 1-D sequence of integer client ids in [0, {n}); got "
                       f"{arr.dtype}{arr.shape}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
      raise ValueError(f"{name} has client ids {bad.tolist()} outside [0, {n})")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
      raise ValueError(f"{name} lists clients {uniq[counts > 1].tolist()} more than once")
    again = arr[self._added[arr]]
    if again.size:
      raise ValueError(f"clients {sorted(again.tolist())} were already added to this stream; "
                       "each client sends one masked input per round")
    return arr

  def client_keys(self, ids) -> ChunkKeys:
    """The key material the clients ``ids`` need to blind their inputs (no state changes).

    Args:
      ids: distinct client ids in [0, C) not added yet; those that do not send (not in U2, or
        dropped before MaskedInputCollection by the spec) get no keys.

    Returns:
      The chunk's :class:`ChunkKeys`.
    """
    self._check_open()
    ids = self._check_ids(ids)
    sends = self._expected[ids]
    noise = np.where(sends[:, None], self._noise[ids], np.uint32(0))
    if not self._blinded:  # simulate=sum: nothing to blind with
      no_edges = np.zeros(0, np.int32)
      return ChunkKeys(ids=ids, sends=sends, weight_codes=self._codes[ids], noise_keys=noise,
                       self_keys=np.zeros((len(ids), 8), np.uint32),
                       edge_keys=np.zeros((0, 8), np.uint32), edge_lo=no_edges,
                       edge_hi=no_edges, blinded=False, plane=self._plane)
    keys = stages.blinding_keys(self.setup, self._shared, ids, sends, self._edges)
    pad = chunk_input.edge_bound(self.setup, len(ids)) - len(keys.edge_keys)  # dummies add nothing
    return ChunkKeys(ids=ids, sends=sends, weight_codes=self._codes[ids], noise_keys=noise,
                     self_keys=keys.self_keys,
                     edge_keys=np.concatenate([keys.edge_keys, np.zeros((pad, 8), np.uint32)]),
                     edge_lo=np.concatenate([keys.edge_lo, np.full(pad, len(ids), np.int32)]),
                     edge_hi=np.concatenate([keys.edge_hi, np.full(pad, len(ids), np.int32)]),
                     plane=self._plane)

  def add(self, ids, updates) -> None:
    """Blinds the clients ``ids``' updates on the device and adds their sum to the total.

    Same as ``add_partial(*masked_partial(client_keys(ids), updates, ...))`` without leaving
    the device.

    Args:
      ids: distinct client ids in [0, C), each added once per stream; ids that do not send
        (see :meth:`client_keys`) are accepted and ignored.
      updates: float ``[len(ids), D]``; rows that are not finite send nothing (drop-outs,
        logged and reported in ``nonfinite`` by :meth:`finish`).

    Raises:
      ValueError: on bad or repeated ids, updates of the wrong shape, or a finished stream.
    """
    self._add(ids, updates, keep_messages=False)

  def _add(self, ids, updates, keep_messages: bool) -> None:
    self._check_open()
    ids = self._check_ids(ids)
    num, dim = updates_shape(updates)
    if (num, dim) != (len(ids), self.dim):
      raise ValueError(f"updates has shape ({num}, {dim}); expected ({len(ids)}, {self.dim}): "
                       f"one row of the stream's dim={self.dim} coordinates per id")
    with _timer(self._seconds, "masked_input_host"):
      keys = self.client_keys(ids)
    with _timer(self._seconds, "masked_input_device"):
      messages, sent, nonfinite = chunk_input.chunk_messages(keys, jnp.asarray(updates), clip=self._clip,
                                                  bits=self._bits, budget_words=self._budget)
    if messages is not None:
      with _timer(self._seconds, "server_sum"):
        self._total = _accumulate(self._total, messages, jnp.asarray(sent)).block_until_ready()
    if keep_messages and self._blinded:  # under sum there are no masked inputs to keep
      self.setup.server.masked_inputs = (np.zeros((0, self.dim + 1), np.uint32)
                                         if messages is None else np.asarray(messages)[sent])
    self._record(ids, ids[sent], ids[nonfinite])
    if self._twin is not None:
      with _timer(self._seconds, "verify"):
        self._twin._add(ids, updates, keep_messages=False)

  def _record(self, ids: np.ndarray, senders: np.ndarray, nonfinite: np.ndarray) -> None:
    self._added[ids] = True
    self._senders.update(senders.tolist())
    self._nonfinite.update(nonfinite.tolist())

  def add_partial(self, total, senders, nonfinite=()) -> None:
    """Adds a partial server sum computed elsewhere by :func:`masked_partial`.

    Args:
      total: uint32 ``[D + 1]`` sum of the senders' masked inputs.
      senders: ids whose masked input is in ``total``.
      nonfinite: ids that would have sent but had a non-finite update.

    Raises:
      ValueError: on a total of the wrong shape or dtype, ids that are repeated, were added
        before or cannot send this round, a finished stream, or a ``verify`` stream (its
        ``sum`` twin needs the updates themselves).
    """
    self._check_open()
    if self._twin is not None:
      raise ValueError("simulate='verify' checks the sum against the protocol on the updates "
                       "themselves (add), not on partial sums made elsewhere (masked_partial); "
                       "use simulate='protocol' or 'sum' with several processes")
    arr = np.asarray(total)
    if arr.shape != (self.dim + 1,) or arr.dtype != np.uint32:
      raise ValueError(f"total is {arr.dtype}{arr.shape}; expected uint32 ({self.dim + 1},): "
                       "the dim + 1 words masked_partial returns")
    senders, nonfinite = self._check_ids(senders, "senders"), self._check_ids(nonfinite,
                                                                               "nonfinite")
    both = np.concatenate([senders, nonfinite])
    if len(np.unique(both)) < len(both):
      raise ValueError(f"clients {sorted(set(senders.tolist()) & set(nonfinite.tolist()))} are "
                       "listed both as senders and as nonfinite")
    stray = both[~self._expected[both]]
    if stray.size:
      raise ValueError(f"clients {sorted(stray.tolist())} cannot send this round (not in U2, or "
                       "dropped before MaskedInputCollection); only stream.clients send")
    with _timer(self._seconds, "server_sum"):
      self._total = (self._total + jnp.asarray(arr)).block_until_ready()
    self._record(both, senders, nonfinite)

  def finish(self) -> SecureSumResult:
    """Unmasking and decoding, once every client of :attr:`clients` was added.

    Raises:
      ValueError: if a client of :attr:`clients` was not added (the stream stays open), or the
        stream is finished.
      RoundAborted: if fewer than t clients sent (stage masked_input) or Unmasking fails.
      fast_sum.SimulationMismatch: under ``verify``, if ``sum``'s outcome differs in any bit.
    """
    self._check_open()
    missing = [u for u in self.clients if u not in self._senders and u not in self._nonfinite]
    if missing:
      raise ValueError(f"clients {missing} were never added: add their updates (add or "
                       "add_partial) before finish; a client that drops out before "
                       "MaskedInputCollection belongs in the Dropouts spec")
    self._finished = True
    if self._twin is None:
      return self._unmask()
    with _timer(self._seconds, "verify"):
      fast = fast_sum.outcome(self._twin.finish)
    result = fast_sum.outcome(self._unmask)
    fast_sum.check_same(self.setup.round_index, result, fast)
    if isinstance(result, RoundAborted):
      raise result
    return result

  def _unmask(self) -> SecureSumResult:
    """Unmasking (of the blinded total, or none under ``sum``) and decoding."""
    setup, shared, seconds = self.setup, self._shared, self._seconds
    with _timer(seconds, "masked_input_host"):
      masked = stages.collect_masked_inputs(setup, shared, self._senders, self._nonfinite,
                                            self.dim + 1)
    setup.server.masked_ids = masked.senders
    total, self._total = self._total, None
    with _timer(seconds, "unmasking_host"):
      unmasking = (stages.unmasking_keys if self._blinded else stages.plan_unmasking)(
          setup, shared, masked)
    with _timer(seconds, "unmasking_device"):
      encoded = (_unmasked_sum(total, unmasking, self._budget) if self._blinded
                 else np.asarray(total))
      if self._plane is None:
        total_f, weight_total, mean = decode_sum(encoded, len(masked.senders), self._clip,
                                                  self._bits, self._scale)
      else:  # the plane's exact sum; planes.combine decodes both instances together
        encoded = np.asarray(chunk_input.to_ring(jnp.asarray(encoded), ring=self._plane.ring,
                                      dim=self.dim))
        total_f = mean = np.zeros(0)
        weight_total = int(encoded[self.dim]) / ((1 << self._bits) - 1) * self._scale
    seconds["total"] = sum(seconds.values())
    traffic = dict(zip(STAGES, (self._advertised, shared.traffic, masked.traffic,
                                unmasking.traffic)))
    return SecureSumResult(
        total=total_f, weight_total=weight_total, mean=mean,
        survivors=np.isin(np.arange(setup.num_clients), masked.senders),
        dropped=_dropped(setup, shared, masked, unmasking), nonfinite=masked.nonfinite,
        too_few_holders=shared.too_few_holders,
        stats=SecAggStats({s: x.sent for s, x in traffic.items()},
                          {s: x.received for s, x in traffic.items()}, seconds),
        encoded_sum=encoded, setup=setup)


def secure_sum(updates, weights=None, *, max_weight: float | None = None,
               protocol: str | None = None, threshold: int | None = None,
               degree: int | None = None, bits: int = 16, clip: float = 1.0,
               dropouts: Dropouts | None = None, seed: int | None = None,
               rng: jax.Array | None = None, setup: RoundSetup | None = None,
               round_index: int | None = None, threat: params_lib.ThreatModel | None = None,
               allow_weak: bool | None = None, keep_transcript_inputs: bool = True,
               budget_words: int = blinding.DEFAULT_BUDGET_WORDS,
               simulate: str | None = None) -> SecureSumResult:
  """Securely sums ``weights[k] * clip(updates[k])`` over the clients that survive the round.

  A :class:`SecureSumStream` fed all C clients as one chunk; feed a stream directly to bound
  memory by a chunk of clients.

  Args:
    updates: float ``[C, D]`` client updates (``1 <= D <= MAX_DIM``); rows that are not finite
      are left out as drop-outs (see module doc).
    weights: ``[C]`` non-negative weights (e.g. example counts), or None for all ones.
    max_weight: public bound W >= every weight (required with weights).
    protocol: "secagg+" (default) or "secagg".
    threshold, degree, threat, allow_weak: see :func:`clipjax.secagg.setup_round`.
    bits: quantisation bits b; ``C * (2^b - 1)`` must fit in 32 bits.
    clip: clipping bound c of each update coordinate (positive, finite).
    dropouts: :class:`Dropouts` spec (explicit ids per stage and/or a rate).
    seed: seed of the public and simulated choices: graph, drop-outs and (if ``rng`` is None)
      stochastic rounding. None: OS randomness. Keys never come from it.
    rng: typed JAX key for stochastic rounding.
    setup: a :class:`RoundSetup` from ``setup_round`` to use (once). It fixes protocol,
      degree, threshold, seed, round_index, dropouts, threat and simulate: passing a different
      value of any of them (or allow_weak) with it is an error.
    round_index: round number bound into AES-GCM associated data (default 0).
    keep_transcript_inputs: store the senders' masked inputs in the server transcript
      (``setup.server.masked_inputs``, a host copy; there are none under ``sum``).
    budget_words: live keystream words per chunk (memory bound of the jitted steps).
    simulate: "protocol" (default), "sum" (the same result without keys or masks,
      :mod:`clipjax.secagg.fast_sum`) or "verify" (both, checked bit for bit).

  Returns:
    A :class:`SecureSumResult`.

  Raises:
    ValueError: on bad shapes, weights, max_weight, bits (overflow), clip, threshold, protocol,
      seed, round index, drop-out ids, arguments that conflict with ``setup``, or a reused setup.
    RoundAborted: if fewer than t clients survive a stage or a secret lacks t shares.
    fast_sum.SimulationMismatch: under ``verify``, if ``sum``'s outcome differs in any bit.
  """
  n, dim = updates_shape(updates)
  if n < 2:
    raise ValueError(f"updates has {n} rows; a secure sum needs at least 2 clients, one row "
                     "each")
  check_options(n, bits, clip, budget_words, weights, max_weight)  # before any key is drawn
  check_rng(rng)
  setup = setup_for(n, setup, protocol, degree, threshold, seed, round_index, dropouts, threat,
                    allow_weak, simulate)
  stream = SecureSumStream(setup, weights, max_weight=max_weight, dim=dim, bits=bits, clip=clip,
                           rng=rng, budget_words=budget_words)
  # All C rows (those that send nothing are not summed): one compiled shape per C and k.
  stream._add(np.arange(n), updates, keep_messages=keep_transcript_inputs)
  return stream.finish()


def secure_sum_tree(tree: Any, weights=None, **kwargs) -> tuple[Any, SecureSumResult]:
  """:func:`secure_sum` of a pytree of ``[C, ...]`` arrays; returns (mean tree, result).

  The tree's leaves are flattened into one ``[C, D]`` matrix; ``result.total`` stays flat and
  the mean tree's leaves are float64 numpy arrays.
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  if not leaves:
    raise ValueError("tree has no leaves")
  for leaf in leaves:
    if not hasattr(leaf, "shape") or len(leaf.shape) < 1:
      raise ValueError(f"every leaf must be an array with a leading client axis [C, ...]; got "
                       f"{type(leaf).__name__} {leaf!r:.40}")
  n = leaves[0].shape[0]
  for leaf in leaves:
    if leaf.shape[:1] != (n,):
      raise ValueError(f"every leaf needs leading client axis {n}; got shape {leaf.shape}")
  flat = jnp.concatenate([jnp.reshape(x, (n, -1)).astype(jnp.float32) for x in leaves], axis=1)
  result = secure_sum(flat, weights, **kwargs)
  out, offset = [], 0
  for leaf in leaves:
    size = int(np.prod(leaf.shape[1:], dtype=np.int64))
    out.append(result.mean[offset:offset + size].reshape(leaf.shape[1:]))
    offset += size
  return jax.tree_util.tree_unflatten(treedef, out), result
