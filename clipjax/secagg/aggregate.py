"""One-call secure weighted sum: ShareKeys, MaskedInputCollection and Unmasking of one round.

Weights: with a public bound ``W = max_weight`` (configured, never derived from the clients'
private counts), client k's weight code is ``r_k = round(w_k / W * (2^b - 1))``, appended as an
extra coordinate, and it encodes ``(r_k / (2^b - 1)) * clip(update_k)``. So ``total = W * sum_k
(r_k / (2^b - 1)) clip(update_k)`` and ``weight_total = W * sum_k r_k / (2^b - 1)`` use the same
(quantised) weights and ``mean = total / weight_total`` is an exact convex combination of the
clipped updates up to stochastic rounding. With ``weights=None`` every r_k is 2^b - 1 and
``weight_total`` is the survivor count exactly. Decoding is int64/float64 (``quantize.decode``).

A client whose update holds NaN or +-Inf never enters the sum: it is treated as a drop-out
before MaskedInputCollection (its pairwise masks are recovered like any drop-out's), reported in
``SecureSumResult.nonfinite`` and logged. A SecAgg+ client with fewer than t share holders
cannot share its secrets, so it drops at ShareKeys (``too_few_holders``) instead of aborting
the round.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import secrets
import struct
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import blinding, chacha, host_crypto, quantize, shamir
from clipjax.secagg import params as params_lib
from clipjax.secagg import protocol as protocol_lib
from clipjax.secagg.protocol import STAGES, Dropouts, RoundAborted, RoundSetup

_client_messages = jax.jit(blinding.client_messages,
                           static_argnames=("clip", "bits", "chunk_words"))
_server_sum = jax.jit(blinding.server_sum)
_unblind = jax.jit(blinding.unblind, static_argnames=("chunk_words",))
_finite_rows = jax.jit(lambda x: jnp.all(jnp.isfinite(x), axis=1))
_SHARE_PLAINTEXT = 8 + 2 * shamir.SHARE_BYTES
_SHARE_CIPHERTEXT = host_crypto.NONCE_BYTES + _SHARE_PLAINTEXT + host_crypto.TAG_BYTES
# Largest D: the chunked masked vector (D + 1 words, padded by up to one chunk of at most
# D + 16 words) must stay addressable by int32 indices.
MAX_DIM = (1 << 30) - 16
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SecAggStats:
  """Bytes per client per stage (int64 ``[C]`` each) and seconds per step."""
  bytes_sent: dict[str, np.ndarray]
  bytes_received: dict[str, np.ndarray]
  seconds: dict[str, float]


@dataclasses.dataclass(frozen=True)
class SecureSumResult:
  """Result of :func:`secure_sum`.

  Attributes:
    total: float64 ``[D]``: sum over survivors of weight_k * clip(update_k), quantised.
    weight_total: sum of survivors' (quantised) weights.
    mean: float64 ``[D]``: ``total / weight_total`` (NaN if every survivor has weight 0).
    survivors: bool ``[C]``: clients whose input is in the sum.
    dropped: stage -> sorted ids that dropped out at that stage (the drop-out spec).
    nonfinite: sorted ids left out because their update was not finite (NaN or +-Inf).
    too_few_holders: sorted ids left out at ShareKeys: fewer than t share holders.
    stats: :class:`SecAggStats`.
    encoded_sum: uint32 ``[D + 1]``: the unmasked field sum (last coordinate: weight codes).
    setup: the round's :class:`RoundSetup` (keys, graph, parameters, server transcript).
  """
  total: np.ndarray
  weight_total: float
  mean: np.ndarray
  survivors: np.ndarray
  dropped: dict[str, tuple[int, ...]]
  nonfinite: tuple[int, ...]
  too_few_holders: tuple[int, ...]
  stats: SecAggStats
  encoded_sum: np.ndarray
  setup: RoundSetup


def _words(key: bytes) -> np.ndarray:
  return chacha.key_words(key)


def noise_keys(rng: jax.Array, num_clients: int) -> jax.Array:
  """uint32 ``[C, 8]`` stochastic-rounding keys: ``fold_in(rng, client)``."""
  return jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(rng, k), (8,), jnp.uint32))(
      jnp.arange(num_clients))


def weight_codes(weights, num_clients: int, bits: int,
                 max_weight: float | None) -> tuple[np.ndarray, float]:
  """Public per-client weight codes (uint32 ``[C]``) and the scale W = max_weight.

  Raises:
    ValueError: if weights are given without a public ``max_weight`` (or the reverse), have the
      wrong shape, are negative or not finite, exceed ``max_weight``, or are positive but so
      small against it that they quantise to code 0 at ``bits`` (they would vanish).
  """
  levels = (1 << bits) - 1
  if weights is None:
    if max_weight is not None:
      raise ValueError(f"max_weight={max_weight!r} was given without weights; it bounds the "
                       "weights and means nothing without them")
    return np.full(num_clients, levels, np.uint32), 1.0
  if max_weight is None:
    raise ValueError("weights need max_weight: a public bound on every client's weight, "
                     "configured in advance (a real server cannot know the clients' counts)")
  if isinstance(max_weight, bool) or not isinstance(max_weight, numbers.Real) \
      or not math.isfinite(max_weight) or max_weight <= 0:
    raise ValueError(f"max_weight={max_weight!r} must be a positive finite number")
  w = np.asarray(weights, np.float64)
  if w.shape != (num_clients,):
    raise ValueError(f"weights has shape {w.shape}; expected ({num_clients},) to match updates")
  if not np.all(np.isfinite(w)) or np.any(w < 0):
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    raise ValueError(f"weights must be finite and non-negative; clients {bad.tolist()} have "
                     f"{w[bad].tolist()}")
  over = np.flatnonzero(w > max_weight)
  if over.size:
    raise ValueError(f"clients {over.tolist()} have weights {w[over].tolist()} above "
                     f"max_weight={max_weight}; a weight may be at most the public max_weight")
  codes = quantize.encode_weight(w / float(max_weight), bits)
  vanish = np.flatnonzero((w > 0) & (codes == 0))
  if vanish.size:
    raise ValueError(
        f"clients {vanish.tolist()} have weights {w[vanish].tolist()} that quantise to code 0 "
        f"with max_weight={max_weight} at bits={bits} and would vanish from the average; "
        f"weights must be 0 or at least max_weight / (2 (2^bits - 1)) = "
        f"{float(max_weight) / (2 * levels):.4g}: raise bits or lower max_weight")
  return codes, float(max_weight)


def _input_shape(updates) -> tuple[int, int]:
  shape, dtype = getattr(updates, "shape", None), getattr(updates, "dtype", None)
  if shape is None or dtype is None:
    arr = np.asarray(updates)
    shape, dtype = arr.shape, arr.dtype
  if len(shape) != 2 or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"updates must be a float [C, D] array, got {dtype}{tuple(shape)}")
  n, dim = (int(v) for v in shape)
  if not 1 <= dim <= MAX_DIM:
    raise ValueError(f"updates has D={dim} coordinates; allowed: 1 <= D <= 2^30 - 16 = {MAX_DIM}"
                     " (the masked vector is indexed with int32)")
  return n, dim


def _setup_for(n, setup, protocol, degree, threshold, seed, round_index, dropouts, threat,
               allow_weak) -> RoundSetup:
  if setup is None:
    return protocol_lib.setup_round(
        n, protocol="secagg+" if protocol is None else protocol, degree=degree,
        threshold=threshold, seed=seed, round_index=0 if round_index is None else round_index,
        dropouts=dropouts, threat=threat, allow_weak=bool(allow_weak))
  if not isinstance(setup, RoundSetup):
    raise ValueError(f"setup={setup!r} must be a RoundSetup from setup_round")
  if setup.num_clients != n:
    raise ValueError(f"setup is for {setup.num_clients} clients but updates has {n} rows")
  fixed = {"protocol": (protocol, setup.protocol), "degree": (degree, setup.degree),
           "threshold": (threshold, setup.threshold), "seed": (seed, setup.seed),
           "round_index": (round_index, setup.round_index),
           "dropouts": (dropouts, setup.dropout_spec), "threat": (threat, setup.params.threat)}
  for name, (given, used) in fixed.items():
    if given is not None and given != used:
      raise ValueError(f"{name}={given!r} was passed with a setup that has {name}={used!r}; "
                       f"setup_round fixes it: pass it there, or leave it unset here")
  if allow_weak is not None:
    raise ValueError("allow_weak was passed with a setup; setup_round checks the parameters: "
                     "pass it there")
  return setup


def secure_sum(updates, weights=None, *, max_weight: float | None = None,
               protocol: str | None = None, threshold: int | None = None,
               degree: int | None = None, bits: int = 16, clip: float = 1.0,
               dropouts: Dropouts | None = None, seed: int | None = None,
               rng: jax.Array | None = None, setup: RoundSetup | None = None,
               round_index: int | None = None, threat: params_lib.ThreatModel | None = None,
               allow_weak: bool | None = None, keep_transcript_inputs: bool = True,
               budget_words: int = blinding.DEFAULT_BUDGET_WORDS) -> SecureSumResult:
  """Securely sums ``weights[k] * clip(updates[k])`` over the clients that survive the round.

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
      degree, threshold, seed, round_index, dropouts and threat: passing a different value of
      any of them (or allow_weak) with it is an error.
    round_index: round number bound into AES-GCM associated data (default 0).
    keep_transcript_inputs: store the masked inputs in the server transcript (host copy).
    budget_words: live keystream words per chunk (memory bound of the jitted steps).

  Returns:
    A :class:`SecureSumResult`.

  Raises:
    ValueError: on bad shapes, weights, max_weight, bits (overflow), clip, threshold, protocol,
      seed, round index, drop-out ids, arguments that conflict with ``setup``, or a reused setup.
    RoundAborted: if fewer than t clients survive a stage or a secret lacks t shares.
  """
  n, dim = _input_shape(updates)
  quantize.check_bits(n, bits)
  clip = quantize.check_clip(clip)
  if isinstance(budget_words, bool) or not isinstance(budget_words, numbers.Integral) \
      or budget_words < 16:
    raise ValueError(f"budget_words={budget_words!r} must be an integer >= 16")
  codes, scale = weight_codes(weights, n, bits, max_weight)
  setup = _setup_for(n, setup, protocol, degree, threshold, seed, round_index, dropouts, threat,
                     allow_weak)
  if setup.used:
    raise ValueError("setup was already used by a secure_sum: pairwise masks must never be "
                     "reused; call setup_round again")
  setup.used = True
  updates = jnp.asarray(updates)
  t, srv, rand = setup.threshold, setup.server, setup.rng
  drops = setup.dropouts
  seconds = {"advertise_keys": setup.seconds}
  sent = {s: np.zeros(n, np.int64) for s in STAGES}
  recv = {s: np.zeros(n, np.int64) for s in STAGES}
  u1 = set(setup.advertised)
  for u in u1:
    sent["advertise_keys"][u] = protocol_lib.PUBLIC_KEY_MESSAGE_BYTES
    recv["advertise_keys"][u] = protocol_lib.PUBLIC_KEY_MESSAGE_BYTES * len(setup.neighbours(u))

  left_out = {"nonfinite": (), "too_few_holders": ()}  # reported with an abort too

  def abort(message, stage, participants):
    return RoundAborted(f"round {setup.round_index} aborted at {stage}: {message}", stage,
                        participants, **left_out)

  def check(stage, alive, participants):
    if len(alive) < t:
      raise abort(f"{len(alive)} clients survive, fewer than threshold t={t}", stage,
                  participants)

  # ShareKeys: self seed b_u; shares of b_u and s_u^SK to holders {u} + N(u), encrypted. A
  # client with fewer than t holders among the clients that share cannot have its secrets
  # rebuilt, so it is dropped here, alone (and, in turn, so is any client left short by that):
  # the server can decide this from public facts, the graph and who sent shares.
  start = time.perf_counter()
  candidates = u1 - drops["share_keys"]
  u2set = set(candidates)
  while True:
    short = {u for u in u2set if 1 + sum(v in u2set for v in setup.neighbours(u)) < t}
    if not short:
      break
    u2set -= short
  u2 = sorted(u2set)
  too_few = left_out["too_few_holders"] = tuple(sorted(candidates - u2set))
  if len(u2) < t:  # every candidate trained and sent shares: all of them are charged
    raise abort(f"{len(u2)} clients survive ({len(too_few)} more lacked t share holders), fewer "
                f"than threshold t={t}", "share_keys", candidates)
  self_seed, own_shares = {}, {}
  for u in u2:
    holders = (u,) + tuple(v for v in setup.neighbours(u) if v in u2set)
    self_seed[u] = rand.bytes(32)
    sb = shamir.split(self_seed[u], t, holders, rand)
    ss = shamir.split(setup.mask_private(u), t, holders, rand)
    own_shares[u] = (sb[u], ss[u])
    for v in holders[1:]:
      plain = struct.pack("<II", u, v) + sb[v] + ss[v]
      aad = host_crypto.associated_data(u, v, setup.round_index, host_crypto.INFO_SHARES)
      key = setup.peer_key(u, v, host_crypto.INFO_SHARES)
      srv.share_ciphertexts[(u, v)] = host_crypto.seal(key, plain, aad, rand)
      sent["share_keys"][u] += _SHARE_CIPHERTEXT
      recv["share_keys"][v] += _SHARE_CIPHERTEXT
  seconds["share_keys"] = time.perf_counter() - start

  # MaskedInputCollection. A client whose update is not finite sends nothing (a drop-out).
  start = time.perf_counter()
  finite = np.asarray(_finite_rows(updates))
  nonfinite = tuple(u for u in u2 if not finite[u] and u not in drops["masked_input"])
  left_out["nonfinite"] = nonfinite
  if nonfinite:
    _log.warning("round %d: clients %s have non-finite updates (NaN or Inf); they are left out "
                 "of the sum as drop-outs", setup.round_index, list(nonfinite))
  u3 = [u for u in u2 if u not in drops["masked_input"] and finite[u]]
  check("masked_input", u3, u3 + list(nonfinite))  # the non-finite ones trained as well
  row = {u: i for i, u in enumerate(u3)}
  edges = [(a, b) for a, b in setup.edges.tolist() if a in u2set and b in u2set
           and (a in row or b in row)]
  edge_keys = np.stack([_words(setup.mask_seed(a, b)) for a, b in edges]) if edges \
      else np.zeros((0, 8), np.uint32)
  lo = np.array([row.get(a, len(u3)) for a, _ in edges], np.int32)
  hi = np.array([row.get(b, len(u3)) for _, b in edges], np.int32)
  self_keys = np.stack([_words(self_seed[u]) for u in u3])
  seconds["masked_input_host"] = time.perf_counter() - start
  start = time.perf_counter()
  if rng is None:
    noise_seed = setup.seed if setup.seed is not None else secrets.randbits(63)
    rng = jax.random.key(noise_seed)
  ids = np.array(u3)
  chunk = blinding.chunk_words_for(2 * len(u3) + len(edges), dim + 1, budget_words)
  scale_hi, scale_lo = quantize.scale_pair(codes, clip)
  messages = _client_messages(
      updates[ids].astype(jnp.float32), jnp.asarray(scale_hi[ids]), jnp.asarray(scale_lo[ids]),
      jnp.asarray(codes[ids]), noise_keys(rng, n)[ids], jnp.asarray(self_keys),
      jnp.asarray(edge_keys), jnp.asarray(lo), jnp.asarray(hi), clip=clip, bits=bits,
      chunk_words=chunk)
  messages.block_until_ready()
  seconds["masked_input_device"] = time.perf_counter() - start
  for u in u3:
    sent["masked_input"][u] = 4 * (dim + 1)
  srv.masked_ids = tuple(u3)
  if keep_transcript_inputs:
    srv.masked_inputs = np.asarray(messages)
  start = time.perf_counter()
  total = _server_sum(messages).block_until_ready()
  seconds["server_sum"] = time.perf_counter() - start
  del messages

  # Unmasking: survivors reveal b-shares of U3 and s^SK-shares of U2 \ U3.
  start = time.perf_counter()
  u3set = set(u3)
  u4 = [v for v in u3 if v not in drops["unmasking"]]
  check("unmasking", u4, u3)
  revealed: dict[int, dict[int, bytes]] = {u: {} for u in u2}
  for v in u4:
    recv["unmasking"][v] += 4 * len(u3)
    for u in u2:
      if u == v:
        share = own_shares[u][0]
      elif (u, v) in srv.share_ciphertexts:
        aad = host_crypto.associated_data(u, v, setup.round_index, host_crypto.INFO_SHARES)
        plain = host_crypto.open_sealed(setup.peer_key(v, u, host_crypto.INFO_SHARES),
                                        srv.share_ciphertexts[(u, v)], aad)
        sb, ss = plain[8:8 + shamir.SHARE_BYTES], plain[8 + shamir.SHARE_BYTES:]
        share = sb if u in u3set else ss
      else:
        continue
      kind = "self_seed" if u in u3set else "mask_key"
      srv.revealed_shares[(v, u, kind)] = share
      revealed[u][v] = share
      sent["unmasking"][v] += 4 + shamir.SHARE_BYTES
  recovered = {}
  for u in u2:
    if len(revealed[u]) < t:
      raise abort(f"client {u}'s secret has {len(revealed[u])} shares from surviving holders, "
                  f"fewer than threshold t={t}", "unmasking", u3)
    recovered[u] = shamir.combine(revealed[u], t)
  rec_self = np.stack([_words(recovered[u]) for u in u3])
  fix_keys, negated = [], []
  for u in u2:
    if u in u3set:
      continue
    if host_crypto.x25519_public(recovered[u]) != srv.public_keys[u][1]:
      raise abort(f"the reconstructed masking key of client {u} does not match its public key",
                  "unmasking", u3)
    for v in setup.neighbours(u):
      if v in u3set:
        fix_keys.append(_words(host_crypto.agree(recovered[u], srv.public_keys[v][1],
                                                 host_crypto.INFO_MASK)))
        negated.append(v > u)
  fix = np.stack(fix_keys) if fix_keys else np.zeros((0, 8), np.uint32)
  seconds["unmasking_host"] = time.perf_counter() - start
  start = time.perf_counter()
  chunk = blinding.chunk_words_for(len(u3) + len(fix_keys), dim + 1, budget_words)
  encoded = np.asarray(_unblind(total, jnp.asarray(rec_self), jnp.asarray(fix),
                                jnp.asarray(np.array(negated, bool)), chunk_words=chunk))
  # Decode in int64 / float64: the quantisation step is the only error.
  weight_total = int(encoded[dim]) / ((1 << bits) - 1) * scale
  total_f = quantize.decode(encoded[:dim], len(u3), clip, bits) * scale
  mean = total_f / weight_total if weight_total > 0 else np.full(dim, np.nan)
  seconds["unmasking_device"] = time.perf_counter() - start
  seconds["total"] = sum(seconds.values())
  survivors = np.zeros(n, bool)
  survivors[u3] = True
  dropped = {"advertise_keys": tuple(sorted(set(range(n)) - u1)),
             "share_keys": tuple(sorted(drops["share_keys"] & u1)),
             "masked_input": tuple(sorted(drops["masked_input"] & u2set)),
             "unmasking": tuple(sorted(u3set - set(u4)))}
  return SecureSumResult(total=total_f, weight_total=weight_total, mean=mean,
                         survivors=survivors, dropped=dropped, nonfinite=nonfinite,
                         too_few_holders=too_few, stats=SecAggStats(sent, recv, seconds),
                         encoded_sum=encoded, setup=setup)


def secure_sum_tree(tree: Any, weights=None, **kwargs) -> tuple[Any, SecureSumResult]:
  """:func:`secure_sum` of a pytree of ``[C, ...]`` arrays; returns (mean tree, result).

  The tree's leaves are flattened into one ``[C, D]`` matrix; ``result.total`` stays flat and
  the mean tree's leaves are float64 numpy arrays.
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  if not leaves:
    raise ValueError("tree has no leaves")
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
