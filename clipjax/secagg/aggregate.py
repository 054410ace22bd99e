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

:func:`secure_sum` is a short driver over the stages: the host side of each one (who takes part,
which seeds blind what, share sealing and reconstruction) is :mod:`clipjax.secagg.stages`; the
device side (blinding, the server sum, unblinding) is :mod:`clipjax.secagg.blinding`, jitted
here; this module validates the arguments and decodes the sum.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import secrets
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import blinding, quantize, stages
from clipjax.secagg import params as params_lib
from clipjax.secagg import protocol as protocol_lib
from clipjax.secagg.protocol import STAGES, Dropouts, RoundSetup

_client_messages = jax.jit(blinding.client_messages,
                           static_argnames=("clip", "bits", "chunk_words"))
_server_sum = jax.jit(blinding.server_sum)
_unblind = jax.jit(blinding.unblind, static_argnames=("chunk_words",))
_finite_rows = jax.jit(lambda x: jnp.all(jnp.isfinite(x), axis=1))
# Largest D: the chunked masked vector (D + 1 words, padded by up to one chunk of at most
# D + 16 words) must stay addressable by int32 indices.
MAX_DIM = (1 << 30) - 16


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


@contextlib.contextmanager
def _timer(seconds: dict[str, float], name: str):
  """Stores the host seconds the ``with`` body took as ``seconds[name]`` (unless it raises)."""
  start = time.perf_counter()
  yield
  seconds[name] = time.perf_counter() - start


def _masked_inputs(updates: jax.Array, codes: np.ndarray, masking: stages.MaskingKeys,
                   rng: jax.Array | None, seed: int | None, *, clip: float, bits: int,
                   budget_words: int) -> jax.Array:
  """MaskedInputCollection on the device: the senders' uint32 ``[S, D + 1]`` masked inputs."""
  if rng is None:
    noise_seed = seed if seed is not None else secrets.randbits(63)
    rng = jax.random.key(noise_seed)
  n, dim = updates.shape
  ids = np.array(masking.senders)
  chunk = blinding.chunk_words_for(2 * len(ids) + len(masking.edge_keys), dim + 1, budget_words)
  scale_hi, scale_lo = quantize.scale_pair(codes, clip)
  messages = _client_messages(
      updates[ids].astype(jnp.float32), jnp.asarray(scale_hi[ids]), jnp.asarray(scale_lo[ids]),
      jnp.asarray(codes[ids]), noise_keys(rng, n)[ids], jnp.asarray(masking.self_keys),
      jnp.asarray(masking.edge_keys), jnp.asarray(masking.edge_lo),
      jnp.asarray(masking.edge_hi), clip=clip, bits=bits, chunk_words=chunk)
  return messages.block_until_ready()


def _unmasked_sum(total: jax.Array, unmasking: stages.UnmaskingKeys,
                  budget_words: int) -> np.ndarray:
  """Unmasking on the device: uint32 ``[D + 1]`` sum of the senders' encoded inputs."""
  chunk = blinding.chunk_words_for(len(unmasking.self_keys) + len(unmasking.edge_keys),
                                   total.shape[0], budget_words)
  return np.asarray(_unblind(total, jnp.asarray(unmasking.self_keys),
                             jnp.asarray(unmasking.edge_keys),
                             jnp.asarray(unmasking.edge_negated), chunk_words=chunk))


def _decode(encoded: np.ndarray, num_senders: int, clip: float, bits: int,
            scale: float) -> tuple[np.ndarray, float, np.ndarray]:
  """(total, weight_total, mean) of the unmasked field sum, in int64 / float64.

  The quantisation step is the only error; the mean is NaN if every weight is 0.
  """
  dim = encoded.shape[0] - 1
  weight_total = int(encoded[dim]) / ((1 << bits) - 1) * scale
  total = quantize.decode(encoded[:dim], num_senders, clip, bits) * scale
  mean = total / weight_total if weight_total > 0 else np.full(dim, np.nan)
  return total, weight_total, mean


def _dropped(setup: RoundSetup, shared: stages.SharedKeys, masking: stages.MaskingKeys,
             unmasking: stages.UnmaskingKeys) -> dict[str, tuple[int, ...]]:
  """Stage -> sorted ids that dropped out at that stage (the drop-out spec, as it acted)."""
  advertised = set(setup.advertised)
  return {"advertise_keys": tuple(sorted(set(range(setup.num_clients)) - advertised)),
          "share_keys": tuple(sorted(setup.dropouts["share_keys"] & advertised)),
          "masked_input": tuple(sorted(setup.dropouts["masked_input"] & set(shared.clients))),
          "unmasking": tuple(sorted(set(masking.senders) - set(unmasking.revealers)))}


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
  seconds = {"advertise_keys": setup.seconds}
  advertised = stages.advertise_keys_traffic(setup)
  with _timer(seconds, "share_keys"):
    shared = stages.share_keys(setup)
  with _timer(seconds, "masked_input_host"):
    masking = stages.masking_keys(setup, shared, np.asarray(_finite_rows(updates)), dim + 1)
  with _timer(seconds, "masked_input_device"):
    messages = _masked_inputs(updates, codes, masking, rng, setup.seed, clip=clip, bits=bits,
                              budget_words=budget_words)
  setup.server.masked_ids = masking.senders
  if keep_transcript_inputs:
    setup.server.masked_inputs = np.asarray(messages)
  with _timer(seconds, "server_sum"):
    total = _server_sum(messages).block_until_ready()
  del messages
  with _timer(seconds, "unmasking_host"):
    unmasking = stages.unmasking_keys(setup, shared, masking)
  with _timer(seconds, "unmasking_device"):
    encoded = _unmasked_sum(total, unmasking, budget_words)
    total_f, weight_total, mean = _decode(encoded, len(masking.senders), clip, bits, scale)
  seconds["total"] = sum(seconds.values())
  traffic = dict(zip(STAGES, (advertised, shared.traffic, masking.traffic, unmasking.traffic)))
  return SecureSumResult(
      total=total_f, weight_total=weight_total, mean=mean,
      survivors=np.isin(np.arange(n), masking.senders),
      dropped=_dropped(setup, shared, masking, unmasking), nonfinite=masking.nonfinite,
      too_few_holders=shared.too_few_holders,
      stats=SecAggStats({s: x.sent for s, x in traffic.items()},
                        {s: x.received for s, x in traffic.items()}, seconds),
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
