"""The secure weighted sum's arguments, results and decoding (SecAgg, SecAgg+).

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

The protocol itself runs in :mod:`clipjax.secagg.stream` (:class:`SecureSumStream`,
:func:`secure_sum`); this module holds what it validates (``updates_shape``, ``check_dim``,
``check_options``, ``check_budget``, ``setup_for``), returns (``SecureSumResult``) and decodes
(``decode_sum``).

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import checks, quantize
from clipjax.secagg import protocol as protocol_lib
from clipjax.secagg.protocol import RoundSetup

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
  """Result of :func:`secure_sum` and :meth:`SecureSumStream.finish`.

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


def check_rng(rng) -> jax.Array | None:
  """``rng`` if it is None or one JAX PRNG key (typed, or legacy raw uint32); else ValueError."""
  if rng is None:
    return None
  dtype, shape = getattr(rng, "dtype", None), getattr(rng, "shape", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    ok = shape == ()
  else:  # a legacy raw key (jax.random.PRNGKey): the default implementation's key data
    try:
      ok = dtype == jnp.uint32 and jax.random.wrap_key_data(rng).shape == ()
    except (TypeError, ValueError):
      ok = False
  if not ok:
    got = f"{type(rng).__name__} {'' if dtype is None else dtype}{'' if shape is None else shape}"
    raise ValueError(f"rng must be one JAX PRNG key, e.g. jax.random.key(0), or None (then the "
                     f"round's seed, else the OS, seeds the rounding); got {got}")
  return rng


def noise_keys(rng: jax.Array, num_clients: int, ids=None) -> jax.Array:
  """uint32 ``[C, 8]`` stochastic-rounding keys: ``fold_in(rng, client)``, or with ``ids``
  (int ``[C]``) ``fold_in(rng, ids[i])`` (a second instance over some of the clients rounds with
  their keys in the first: :mod:`clipjax.secagg.planes`)."""
  ids = jnp.arange(num_clients) if ids is None else jnp.asarray(ids)
  return jax.vmap(lambda k: jax.random.bits(jax.random.fold_in(rng, k), (8,), jnp.uint32))(ids)


def weight_codes(weights, num_clients: int, bits: int,
                 max_weight: float | None) -> tuple[np.ndarray, float]:
  """Public per-client weight codes (uint32 ``[C]``) and the scale W = max_weight.

  Raises:
    ValueError: if weights are given without a public ``max_weight`` (or the reverse), are not
      real numbers, have the wrong shape, are negative or not finite, exceed ``max_weight``, or
      are positive but so small against it that they quantise to code 0 at ``bits`` (they would
      vanish); for ``num_clients`` or ``bits`` that are not integers in range.
  """
  if not checks.is_integer(num_clients) or num_clients < 1:
    raise ValueError(f"num_clients={num_clients!r} must be an integer >= 1")
  num_clients = int(num_clients)
  bits = quantize.check_bits_range(bits)
  levels = (1 << bits) - 1
  if weights is None:
    if max_weight is not None:
      raise ValueError(f"max_weight={max_weight!r} was given without weights; it bounds the "
                       "weights and means nothing without them")
    return np.full(num_clients, levels, np.uint32), 1.0
  if max_weight is None:
    raise ValueError("weights need max_weight: a public bound on every client's weight, "
                     "configured in advance (a real server cannot know the clients' counts)")
  if not checks.is_real(max_weight) or not math.isfinite(max_weight) or max_weight <= 0:
    raise ValueError(f"max_weight={max_weight!r} must be a positive finite number")
  try:
    w = np.asarray(weights)
  except ValueError:  # ragged nesting
    w = np.asarray(None)
  if w.dtype.kind not in "iuf":
    raise ValueError(f"weights must be real numbers, one per client (e.g. example counts); got "
                     f"{type(weights).__name__} of dtype {w.dtype}")
  w = w.astype(np.float64)
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


def updates_shape(updates) -> tuple[int, int]:
  """(C, D) of float ``[C, D]`` updates, validated (shape, float dtype, ``1 <= D <= MAX_DIM``).

  Raises:
    ValueError: if ``updates`` is not a 2-D float array or D is out of range.
  """
  shape, dtype = getattr(updates, "shape", None), getattr(updates, "dtype", None)
  if shape is None or dtype is None:
    arr = np.asarray(updates)
    shape, dtype = arr.shape, arr.dtype
  if len(shape) != 2 or not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"updates must be a float [C, D] array, got {dtype}{tuple(shape)}")
  n, dim = (int(v) for v in shape)
  return n, check_dim(dim, "updates has D")


def check_dim(dim, name: str = "dim") -> int:
  """D as an int, validated: ``1 <= D <= MAX_DIM``; ``name`` opens the error message.

  Raises:
    ValueError: for a D that is not an integer in range.
  """
  if not checks.is_integer(dim) or not 1 <= dim <= MAX_DIM:
    raise ValueError(f"{name}={dim!r} coordinates; allowed: 1 <= D <= 2^30 - 16 = {MAX_DIM}"
                     " (the masked vector is indexed with int32)")
  return int(dim)


def check_options(num_clients: int, bits: int, clip: float, budget_words: int, weights,
                  max_weight: float | None) -> tuple[float, np.ndarray, float]:
  """Validated (clip, weight codes uint32 ``[C]``, weight scale W) of one round.

  Raises:
    ValueError: on bits that overflow for ``num_clients``, a bad clip or budget, or weights
      that ``weight_codes`` rejects.
  """
  quantize.check_bits(num_clients, bits)
  clip = quantize.check_clip(clip)
  check_budget(budget_words)
  codes, scale = weight_codes(weights, num_clients, bits, max_weight)
  return clip, codes, scale


def check_budget(budget_words: int) -> None:
  """Checks the live keystream words per chunk (``blinding.chunk_words_for``'s budget).

  Raises:
    ValueError: for a budget that is not an integer >= 16.
  """
  if not checks.is_integer(budget_words) or budget_words < 16:
    raise ValueError(f"budget_words={budget_words!r} must be an integer >= 16")


def setup_for(n, setup, protocol, degree, threshold, seed, round_index, dropouts, threat,
              allow_weak, simulate=None) -> RoundSetup:
  """The round's setup for ``n`` clients: a new ``setup_round`` from the other arguments when
  ``setup`` is None, else ``setup`` itself once checked against them (see ``secure_sum``).

  Raises:
    ValueError: for a setup of another client count, or an argument that conflicts with it.
  """
  if allow_weak is not None and not isinstance(allow_weak, (bool, np.bool_)):
    raise ValueError(f"allow_weak={allow_weak!r} must be True, False or None (True accepts an "
                     "explicit degree/threshold that misses the security target)")
  if setup is None:
    return protocol_lib.setup_round(
        n, protocol="secagg+" if protocol is None else protocol, degree=degree,
        threshold=threshold, seed=seed, round_index=0 if round_index is None else round_index,
        dropouts=dropouts, threat=threat, allow_weak=bool(allow_weak),
        simulate="protocol" if simulate is None else simulate)
  if not isinstance(setup, RoundSetup):
    raise ValueError(f"setup={setup!r} must be a RoundSetup from setup_round")
  if setup.num_clients != n:
    raise ValueError(f"setup is for {setup.num_clients} clients but updates has {n} rows")
  fixed = {"protocol": (protocol, setup.protocol), "degree": (degree, setup.degree),
           "threshold": (threshold, setup.threshold), "seed": (seed, setup.seed),
           "round_index": (round_index, setup.round_index),
           "dropouts": (dropouts, setup.dropout_spec), "threat": (threat, setup.params.threat),
           "simulate": (simulate, setup.simulate)}
  for name, (given, used) in fixed.items():
    if given is not None and given != used:
      raise ValueError(f"{name}={given!r} was passed with a setup that has {name}={used!r}; "
                       f"setup_round fixes it: pass it there, or leave it unset here")
  if allow_weak is not None:
    raise ValueError("allow_weak was passed with a setup; setup_round checks the parameters: "
                     "pass it there")
  return setup


def decode_sum(encoded: np.ndarray, num_senders: int, clip: float, bits: int,
               scale: float) -> tuple[np.ndarray, float, np.ndarray]:
  """(total, weight_total, mean) of the unmasked field sum uint32 ``[D + 1]`` (last word: the
  weight codes), in int64 / float64.

  The quantisation step is the only error; the mean is NaN if every weight is 0.
  """
  dim = encoded.shape[0] - 1
  weight_total = int(encoded[dim]) / ((1 << bits) - 1) * scale
  total = quantize.decode(encoded[:dim], num_senders, clip, bits) * scale
  mean = total / weight_total if weight_total > 0 else np.full(dim, np.nan)
  return total, weight_total, mean
