"""One-call secure weighted sum: ShareKeys, MaskedInputCollection and Unmasking of one round.

Weights: with public scale ``W = weight_scale`` (default: the largest weight), client k encodes
``r_k = round(w_k / W * (2^b - 1))`` as an extra coordinate and quantises ``(r_k / (2^b - 1)) *
update_k``. So ``total = W * sum_k (r_k / (2^b - 1)) update_k`` and ``weight_total = W * sum_k r_k
/ (2^b - 1)`` use the same (quantised) weights and ``mean = total / weight_total`` is an exact
convex combination of the clipped updates up to stochastic rounding. With ``weights=None``
every r_k is 2^b - 1 and ``weight_total`` is the survivor count exactly.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import blinding, chacha, host_crypto, quantize, shamir
from clipjax.secagg import protocol as protocol_lib
from clipjax.secagg.protocol import STAGES, Dropouts, RoundAborted, RoundSetup

_client_messages = jax.jit(blinding.client_messages,
                           static_argnames=("clip", "bits", "chunk_words"))
_server_sum = jax.jit(blinding.server_sum)
_unblind = jax.jit(blinding.unblind, static_argnames=("chunk_words",))
_SHARE_PLAINTEXT = 8 + 2 * shamir.SHARE_BYTES
_SHARE_CIPHERTEXT = host_crypto.NONCE_BYTES + _SHARE_PLAINTEXT + host_crypto.TAG_BYTES


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
    total: float32 ``[D]``: sum over survivors of weight_k * update_k (clipped, quantised).
    weight_total: sum of survivors' (quantised) weights.
    mean: ``total / weight_total``.
    survivors: bool ``[C]``: clients whose input is in the sum.
    dropped: stage -> sorted ids that dropped at that stage.
    stats: :class:`SecAggStats`.
    encoded_sum: uint32 ``[D + 1]``: the unmasked field sum (last coordinate: weights).
    setup: the round's :class:`RoundSetup` (keys, graph, server transcript).
  """
  total: jax.Array
  weight_total: float
  mean: jax.Array
  survivors: np.ndarray
  dropped: dict[str, tuple[int, ...]]
  stats: SecAggStats
  encoded_sum: jax.Array
  setup: RoundSetup


def _words(key: bytes) -> np.ndarray:
  return chacha.key_words(key)


def noise_keys(rng: jax.Array, num_clients: int) -> jax.Array:
  """uint32 ``[C, 8]`` stochastic-rounding keys: ``fold_in(rng, client)``."""
  return jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(rng, k), (8,), jnp.uint32))(
      jnp.arange(num_clients))


def weight_codes(weights, num_clients: int, bits: int, weight_scale: float | None):
  """Public per-client weight codes (uint32 ``[C]``) and the scale W."""
  if weights is None:
    return np.full(num_clients, (1 << bits) - 1, np.uint32), 1.0
  w = np.asarray(weights, np.float64)
  if w.shape != (num_clients,):
    raise ValueError(f"weights has shape {w.shape}; expected ({num_clients},) to match updates")
  if not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError("weights must be finite and non-negative")
  scale = float(w.max()) if weight_scale is None else float(weight_scale)
  if scale <= 0 or np.any(w > scale * (1 + 1e-12)):
    raise ValueError(f"weight_scale={scale} must be positive and >= every weight")
  return quantize.encode_weight(w / scale, bits), scale


def secure_sum(updates, weights=None, *, protocol: str = "secagg+", threshold: int | None = None,
               degree: int | None = None, bits: int = 16, clip: float = 1.0,
               dropouts: Dropouts | None = None, seed: int | None = 0,
               rng: jax.Array | None = None, setup: RoundSetup | None = None,
               weight_scale: float | None = None, round_index: int = 0,
               keep_transcript_inputs: bool = True,
               budget_words: int = blinding.DEFAULT_BUDGET_WORDS) -> SecureSumResult:
  """Securely sums ``weights[k] * updates[k]`` over the clients that survive the round.

  Args:
    updates: float ``[C, D]`` client updates.
    weights: ``[C]`` non-negative weights (e.g. example counts), or None for all ones.
    protocol: "secagg+" (random k-regular graph) or "secagg" (complete graph).
    threshold, degree: see :func:`clipjax.secagg.setup_round` for defaults.
    bits: quantisation bits b; ``C * (2^b - 1)`` must fit in 32 bits.
    clip: clipping bound c of the scaled updates.
    dropouts: :class:`Dropouts` spec (explicit ids per stage and/or a rate).
    seed: seed of keys, graph, drop-outs and (if ``rng`` is None) stochastic rounding.
    rng: typed JAX key for stochastic rounding.
    setup: a :class:`RoundSetup` from ``setup_round`` to reuse (once); else one is made.
    weight_scale: public bound W on the weights (default: their maximum).
    round_index: round number bound into AES-GCM associated data.
    keep_transcript_inputs: store the masked inputs in the server transcript (host copy).
    budget_words: live keystream words per chunk (memory bound of the jitted steps).

  Returns:
    A :class:`SecureSumResult`.

  Raises:
    ValueError: on bad shapes, weights, bits (overflow), threshold, protocol or a reused setup.
    RoundAborted: if fewer than t clients survive a stage or a secret lacks t shares.
  """
  updates = jnp.asarray(updates)
  if updates.ndim != 2 or not jnp.issubdtype(updates.dtype, jnp.floating):
    raise ValueError(f"updates must be a float [C, D] array, got {updates.dtype}{updates.shape}")
  n, dim = updates.shape
  quantize.check_bits(n, bits)
  if not clip > 0:
    raise ValueError(f"clip={clip} must be positive")
  codes, scale = weight_codes(weights, n, bits, weight_scale)
  if setup is None:
    setup = protocol_setup(n, protocol, degree, threshold, seed, round_index, dropouts)
  elif setup.num_clients != n:
    raise ValueError(f"setup is for {setup.num_clients} clients but updates has {n} rows")
  if setup.used:
    raise ValueError("setup was already used by a secure_sum: pairwise masks must never be "
                     "reused; call setup_round again")
  setup.used = True
  t, srv, rand = setup.threshold, setup.server, setup.rng
  drops = setup.dropouts
  seconds = {"advertise_keys": setup.seconds}
  sent = {s: np.zeros(n, np.int64) for s in STAGES}
  recv = {s: np.zeros(n, np.int64) for s in STAGES}
  u1 = set(setup.advertised)
  for u in u1:
    sent["advertise_keys"][u] = protocol_lib.PUBLIC_KEY_MESSAGE_BYTES
    recv["advertise_keys"][u] = protocol_lib.PUBLIC_KEY_MESSAGE_BYTES * len(setup.neighbours(u))

  def check(stage, alive):
    if len(alive) < t:
      raise RoundAborted(f"round {setup.round_index} aborted at {stage}: {len(alive)} clients "
                         f"survive, fewer than threshold t={t}")

  # ShareKeys: self seed b_u; shares of b_u and s_u^SK to holders {u} + N(u), encrypted.
  start = time.perf_counter()
  u2 = sorted(u1 - drops["share_keys"])
  check("share_keys", u2)
  self_seed, own_shares = {}, {}
  for u in u2:
    holders = (u,) + setup.neighbours(u)
    if len(holders) < t:
      raise RoundAborted(f"client {u} has {len(holders)} share holders, fewer than t={t}")
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

  # MaskedInputCollection.
  start = time.perf_counter()
  u2set = set(u2)
  u3 = [u for u in u2 if u not in drops["masked_input"]]
  check("masked_input", u3)
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
    rng = jax.random.key(0 if seed is None else seed)
  ids = np.array(u3)
  chunk = blinding.chunk_words_for(2 * len(u3) + len(edges), dim + 1, budget_words)
  ratio = (codes.astype(np.float64) / ((1 << bits) - 1)).astype(np.float32)
  messages = _client_messages(
      updates[ids].astype(jnp.float32), jnp.asarray(ratio[ids]), jnp.asarray(codes[ids]),
      noise_keys(rng, n)[ids], jnp.asarray(self_keys), jnp.asarray(edge_keys),
      jnp.asarray(lo), jnp.asarray(hi), clip=float(clip), bits=bits, chunk_words=chunk)
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
  check("unmasking", u4)
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
      raise RoundAborted(f"round {setup.round_index} aborted at unmasking: client {u}'s secret "
                         f"has {len(revealed[u])} shares from surviving holders, fewer than "
                         f"threshold t={t}")
    recovered[u] = shamir.combine(revealed[u], t)
  rec_self = np.stack([_words(recovered[u]) for u in u3])
  fix_keys, negated = [], []
  for u in u2:
    if u in u3set:
      continue
    if host_crypto.x25519_public(recovered[u]) != srv.public_keys[u][1]:
      raise RoundAborted(f"reconstructed masking key of client {u} does not match its public key")
    for v in setup.neighbours(u):
      if v in u3set:
        fix_keys.append(_words(host_crypto.agree(recovered[u], srv.public_keys[v][1],
                                                 host_crypto.INFO_MASK)))
        negated.append(v > u)
  fix = np.stack(fix_keys) if fix_keys else np.zeros((0, 8), np.uint32)
  seconds["unmasking_host"] = time.perf_counter() - start
  start = time.perf_counter()
  chunk = blinding.chunk_words_for(len(u3) + len(fix_keys), dim + 1, budget_words)
  encoded = _unblind(total, jnp.asarray(rec_self), jnp.asarray(fix),
                     jnp.asarray(np.array(negated, bool)), chunk_words=chunk)
  weight_total = float(np.asarray(encoded[dim], np.float64)) / ((1 << bits) - 1) * scale
  total_f = quantize.decode(encoded[:dim], len(u3), clip, bits) * np.float32(scale)
  mean = total_f / np.float32(weight_total) if weight_total > 0 else total_f * np.nan
  mean.block_until_ready()
  seconds["unmasking_device"] = time.perf_counter() - start
  seconds["total"] = sum(seconds.values())
  survivors = np.zeros(n, bool)
  survivors[u3] = True
  dropped = {"advertise_keys": tuple(sorted(set(range(n)) - u1)),
             "share_keys": tuple(sorted(u1 - u2set)),
             "masked_input": tuple(sorted(u2set - u3set)),
             "unmasking": tuple(sorted(u3set - set(u4)))}
  return SecureSumResult(total=total_f, weight_total=weight_total, mean=mean,
                         survivors=survivors, dropped=dropped,
                         stats=SecAggStats(sent, recv, seconds), encoded_sum=encoded,
                         setup=setup)


def protocol_setup(n, protocol_name, degree, threshold, seed, round_index, dropouts):
  return protocol_lib.setup_round(n, protocol=protocol_name, degree=degree, threshold=threshold,
                              seed=seed, round_index=round_index, dropouts=dropouts)


def secure_sum_tree(tree: Any, weights=None, **kwargs) -> tuple[Any, SecureSumResult]:
  """:func:`secure_sum` of a pytree of ``[C, ...]`` arrays; returns (mean tree, result).

  The tree's leaves are flattened into one ``[C, D]`` matrix; ``result.total`` stays flat.
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
