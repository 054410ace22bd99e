"""Straggler self-identification on the client, from the time reports it holds (DESIGN 2.2).

From round 2 on, every client receives its peers' last-round times (fit time normalised to the
full model, and network time), encrypted under SecAgg pairwise keys and relayed by the server.
Client k computes T_v = fit_v + net_v for every report it holds plus its own, and is a straggler
iff T_k > T* = quantile(T, 1 - f). Under SecAgg+ it only hears its graph neighbours, so T* is a
sample estimate; reports from peers that dropped out are marked invalid and ignored.

Quantile method: linear interpolation between order statistics (Hyndman and Fan type 7, NumPy's
default `method="linear"`): sorted values x_0..x_{n-1}, position h = q (n - 1), result
x_floor(h) + (h - floor(h)) (x_floor(h)+1 - x_floor(h)). With n distinct times and q = 1 - f this
makes exactly n - 1 - floor(q (n - 1)) clients stragglers (4 of 20 and 10 of 50 at f = 0.2);
f = 0 gives T* = max, hence no straggler. Positions within 1e-4 of an integer are snapped to it
so float32 rounding of q (n - 1) cannot flip a client whose time equals an order statistic.

`straggler_decision` is jnp, for ONE client; vmap it over clients.

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv 2510.16694 (2025), Sec. 4.1.
  Hyndman, Fan. Sample quantiles in statistical packages. The American Statistician 50(4), 1996.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

# Little-endian (fit_s, net_s) as IEEE float64: 16 bytes, no padding.
_REPORT_FORMAT = "<2d"
TIME_REPORT_BYTES = struct.calcsize(_REPORT_FORMAT)


class StragglerDecision(NamedTuple):
  """One client's verdict: `is_straggler` bool[], `t_star` and `f_star` f32[] in seconds."""

  is_straggler: jax.Array
  t_star: jax.Array
  f_star: jax.Array


def check_straggler_fraction(straggler_fraction) -> None:
  """Raises ValueError unless a concrete straggler fraction lies in [0, 1)."""
  if isinstance(straggler_fraction, (int, float)) and not 0.0 <= straggler_fraction < 1.0:
    raise ValueError(f"straggler_fraction must be in [0, 1), got {straggler_fraction!r}")


def masked_quantile(values: jax.Array, valid: jax.Array, q) -> jax.Array:
  """Type-7 (linear) quantile of `values[valid]`; NaN if nothing is valid.

  Args:
    values: f32[K].
    valid: bool[K].
    q: quantile level in [0, 1] (may be traced).

  Returns:
    f32[] quantile.
  """
  chex.assert_rank(values, 1)
  chex.assert_equal_shape([values, valid])
  values = values.astype(jnp.float32)
  n = jnp.sum(valid.astype(jnp.int32))
  ordered = jnp.sort(jnp.where(valid, values, jnp.inf))
  h = jnp.asarray(q, jnp.float32) * (n - 1).astype(jnp.float32)
  h = jnp.where(jnp.abs(h - jnp.round(h)) < 1e-4, jnp.round(h), h)
  lo = jnp.clip(jnp.floor(h).astype(jnp.int32), 0, jnp.maximum(n - 1, 0))
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  frac = h - lo.astype(jnp.float32)
  # frac == 0 must not touch ordered[hi] (avoids 0 * inf when hi is the padding).
  result = jnp.where(frac > 0, ordered[lo] + frac * (ordered[hi] - ordered[lo]), ordered[lo])
  return jnp.where(n > 0, result, jnp.nan)


def straggler_decision(
    own_fit,
    own_net,
    known_fit: jax.Array,
    known_net: jax.Array,
    straggler_fraction=0.2,
    *,
    valid: jax.Array | None = None,
    has_reports=True,
) -> StragglerDecision:
  """Decides whether this client is a straggler from the times it knows.

  Args:
    own_fit: this client's last-round fit time normalised to the full model, seconds.
    own_net: this client's last-round network (non-prunable) time, seconds.
    known_fit: f32[K], peers' reported full-model fit times (own report excluded).
    known_net: f32[K], peers' reported network times.
    straggler_fraction: f in [0, 1), default 0.2.
    valid: bool[K], which reports arrived (default: all).
    has_reports: False in round 1 (no times exist yet): never a straggler.

  Returns:
    `StragglerDecision(is_straggler, t_star, f_star)` with T* = quantile(fit + net, 1 - f) and
    F* = quantile(fit, 1 - f), both over the own time plus every valid known one.

  Raises:
    ValueError: if a concrete straggler_fraction is outside [0, 1).
  """
  check_straggler_fraction(straggler_fraction)
  known_fit = jnp.asarray(known_fit, jnp.float32)
  known_net = jnp.asarray(known_net, jnp.float32)
  chex.assert_rank(known_fit, 1)
  chex.assert_equal_shape([known_fit, known_net])
  if valid is None:
    valid = jnp.ones(known_fit.shape, bool)
  chex.assert_equal_shape([known_fit, valid])
  own_fit = jnp.asarray(own_fit, jnp.float32)
  own_net = jnp.asarray(own_net, jnp.float32)
  chex.assert_rank([own_fit, own_net], 0)

  fits = jnp.concatenate([own_fit[None], known_fit])
  totals = jnp.concatenate([(own_fit + own_net)[None], known_fit + known_net])
  all_valid = jnp.concatenate([jnp.ones((1,), bool), jnp.asarray(valid, bool)])
  q = 1.0 - jnp.asarray(straggler_fraction, jnp.float32)
  t_star = masked_quantile(totals, all_valid, q)
  f_star = masked_quantile(fits, all_valid, q)
  is_straggler = jnp.logical_and(jnp.asarray(has_reports, bool), own_fit + own_net > t_star)
  return StragglerDecision(is_straggler=is_straggler, t_star=t_star, f_star=f_star)


def encode_time_report(fit_s: float, net_s: float) -> bytes:
  """Serialises one time report to 16 bytes (two little-endian float64) for AES-GCM.

  Raises:
    ValueError: if a time is negative or not finite.
  """
  fit_s, net_s = float(fit_s), float(net_s)
  for name, value in (("fit_s", fit_s), ("net_s", net_s)):
    if not (math.isfinite(value) and value >= 0.0):
      raise ValueError(f"time report {name} must be finite and >= 0, got {value!r}")
  return struct.pack(_REPORT_FORMAT, fit_s, net_s)


def decode_time_report(data: bytes) -> tuple[float, float]:
  """Inverse of `encode_time_report`: returns (fit_s, net_s).

  Raises:
    ValueError: if `data` is not exactly 16 bytes or holds a negative / non-finite time.
  """
  if not isinstance(data, (bytes, bytearray, memoryview)):
    raise ValueError(f"time report must be bytes, got {type(data).__name__}")
  if len(data) != TIME_REPORT_BYTES:
    raise ValueError(f"time report must be {TIME_REPORT_BYTES} bytes, got {len(data)}")
  fit_s, net_s = struct.unpack(_REPORT_FORMAT, bytes(data))
  for name, value in (("fit_s", fit_s), ("net_s", net_s)):
    if not (math.isfinite(value) and value >= 0.0):
      raise ValueError(f"decoded time report {name} must be finite and >= 0, got {value!r}")
  return fit_s, net_s
