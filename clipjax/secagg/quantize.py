"""Fixed-point encoding of (weighted) float updates into the uint32 field and back.

Client k clips its float32 update to ``[-c, c]`` and encodes each coordinate y as the real
``z = (2^b - 1) / 2 + y * s_k`` with ``s_k = r_k / (2 c)``, where ``r_k`` in ``[0, 2^b - 1]`` is
its public weight code (``r_k = 2^b - 1`` unweighted: then z sweeps ``[0, 2^b - 1]``). z is
rounded stochastically, ``q = floor(z) + [u < z - floor(z)]`` with u uniform, so ``E[q] = z``.

Float32 cannot hold z: at b = 24 it has no bits left for the fraction, and ``floor(z + u)`` in
float32 is biased by up to half a step. So z is carried as an exact float32 pair: ``s_k`` is a
(hi, lo) pair from the host's float64, ``y * s_hi`` is an error-free product (Dekker's
algorithm with a bit-mask split, exact with or without fused multiply-add), and the fraction is
compared with 24-bit uniforms. The remaining bias is below 2^-23 of a step at every b <= 24.

The uniforms come from a ChaCha20 stream keyed per client and indexed by coordinate, so encoding
a vector chunk by chunk gives the same result as encoding it whole. Sums of n such values are
exact in uint32 as long as ``n * (2^b - 1) < 2^32``; :func:`decode` maps the sum back in int64 and
float64, so the quantisation step is the only error.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017 (fixed-point inputs summed in Z_R).
  P. Kairouz et al. The Distributed Discrete Gaussian Mechanism for Federated Learning with
  Secure Aggregation. ICML 2021 (clipping, scaling and stochastic rounding before SecAgg).
  T. J. Dekker. A floating-point technique for extending the available precision. Numerische
  Mathematik 18, 1971 (the error-free product).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import checks

MAX_BITS = 24  # the 24-bit uniforms resolve a step's fraction to 2^-24 at every allowed b
NOISE_NONCE = np.array([0x6E6F6973, 0, 0], np.uint32)  # "nois": separates noise from blinds.
_SPLIT_MASK = np.uint32(0xFFFFF000)  # keeps 12 significant bits of a float32


def _check_num_clients(num_clients) -> int:
  if not checks.is_integer(num_clients) or num_clients < 1:
    raise ValueError(f"num_clients={num_clients!r} must be an integer >= 1 (the clients whose "
                     "codes are summed)")
  return int(num_clients)


def max_safe_bits(num_clients: int) -> int:
  """Largest b with ``num_clients * (2^b - 1) <= 2^32 - 1`` (capped at MAX_BITS).

  Raises:
    ValueError: for a ``num_clients`` that is not an integer >= 1.
  """
  num_clients = _check_num_clients(num_clients)
  bits = 0
  while bits < MAX_BITS and num_clients * ((1 << (bits + 1)) - 1) <= 0xFFFFFFFF:
    bits += 1
  return bits


def check_bits_range(bits) -> int:
  """``bits`` as an int in [1, MAX_BITS], or ValueError (no overflow check: see check_bits)."""
  if not checks.is_integer(bits) or not 1 <= bits <= MAX_BITS:
    raise ValueError(f"bits={bits!r} must be an integer in [1, {MAX_BITS}]")
  return int(bits)


def check_bits(num_clients: int, bits: int) -> None:
  """Raises ValueError unless b-bit values of ``num_clients`` clients sum without wrapping."""
  bits = check_bits_range(bits)
  num_clients = _check_num_clients(num_clients)
  if num_clients * ((1 << bits) - 1) > 0xFFFFFFFF:
    raise ValueError(
        f"overflow: n * (2^b - 1) = {num_clients} * (2^{bits} - 1) does not fit in 32 bits; "
        f"with n={num_clients} clients the largest safe bits is {max_safe_bits(num_clients)}")


def check_clip(clip) -> float:
  """The clip bound as a float32-representable positive finite number, or ValueError."""
  if not checks.is_real(clip) or not math.isfinite(clip) or not clip > 0 \
      or not np.isfinite(np.float32(clip)) or np.float32(clip) <= 0:
    raise ValueError(f"clip={clip!r} must be a positive finite number (float32 range)")
  return float(np.float32(clip))


def scale_pair(weight_code: np.ndarray, clip: float) -> tuple[np.ndarray, np.ndarray]:
  """float32 (hi, lo) with ``hi + lo = r / (2 c)`` to ~2^-48 (``c`` rounded to float32 first)."""
  s = np.asarray(weight_code, np.float64) / (2.0 * check_clip(clip))
  hi = s.astype(np.float32)
  lo = (s - hi.astype(np.float64)).astype(np.float32)
  return hi, lo


def _split(a: jax.Array) -> tuple[jax.Array, jax.Array]:
  """a = hi + lo exactly, each with at most 12 significant bits (no arithmetic on a's value)."""
  bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
  hi = jax.lax.bitcast_convert_type(bits & _SPLIT_MASK, jnp.float32)
  return hi, a - hi


def _two_product(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(p, e): p = fl(a b) and p + e = a b exactly (Dekker). Every partial product is exact, so
  fusing any of them into an FMA yields the same bits."""
  p = a * b
  ah, al = _split(a)
  bh, bl = _split(b)
  e = (((ah * bh - p) + ah * bl) + al * bh) + al * bl
  return p, e


def encode(x: jax.Array, noise: jax.Array, scale_hi: jax.Array, scale_lo: jax.Array,
           clip: float, bits: int) -> jax.Array:
  """Clip, scale and stochastically round float32 ``x`` to uint32 in ``[0, 2^b - 1]``.

  Args:
    x: float32 ``[..., W]`` values (finite; callers drop non-finite clients first).
    noise: uint32 ``[..., W]`` random words, one per value.
    scale_hi, scale_lo: float32 ``[..., 1]`` (or broadcastable) pair of ``r / (2 c)``.
    clip: c.
    bits: b.

  Returns:
    uint32 codes with ``E[code] = (2^b - 1) / 2 + clip(x) * r / (2 c)`` up to 2^-23 of a step.
  """
  bits = check_bits_range(bits)  # static: checked once per trace
  c = np.float32(clip)
  y = jnp.clip(x.astype(jnp.float32), -c, c)
  p, e = _two_product(y, scale_hi)
  e = e + y * scale_lo                         # |y s_lo| <= 2^-24 |p|: its rounding is ~2^-48
  whole = jnp.floor(p)                          # |p| < 2^23: floor and p - floor are exact
  frac = (p - whole) + e + np.float32(0.5)      # (2^b - 1) / 2 = (2^(b-1) - 1) + 1/2
  carry = jnp.floor(frac)
  frac = frac - carry                           # in [0, 1)
  base = whole + carry + np.float32((1 << (bits - 1)) - 1)
  up = (noise >> np.uint32(8)).astype(jnp.float32) < frac * np.float32(1 << 24)
  q = base + up.astype(jnp.float32)
  return jnp.clip(q, 0, np.float32((1 << bits) - 1)).astype(jnp.uint32)


def decode(total: np.ndarray, count: int, clip: float, bits: int) -> np.ndarray:
  """float64 ``sum_k (r_k / (2^b - 1)) clip(x_k)`` from the uint32 sum of ``count`` codes (or
  an exact int64 sum, which may be negative: :func:`clipjax.secagg.planes.combine`).

  ``sum_k q_k ~ count (2^b - 1) / 2 + sum_k clip(x_k) r_k / (2 c)``, inverted in int64 (the sum
  and the offset are exact) and float64 (one rounding), so only the quantisation error remains.
  """
  levels = (1 << check_bits_range(bits)) - 1
  if not checks.is_integer(count) or count < 0:
    raise ValueError(f"count={count!r} must be a non-negative integer (the codes summed)")
  total = np.asarray(total)
  if total.dtype != np.int64:  # a field sum; int64: an exact signed sum (bit planes)
    total = total.astype(np.uint32).astype(np.int64)
  shifted = 2 * total - int(count) * levels
  return shifted.astype(np.float64) * (check_clip(clip) / levels)


def encode_weight(weight_ratio: np.ndarray, bits: int) -> np.ndarray:
  """Public weight ratios in [0, 1] -> uint32 ``round(r * (2^b - 1))`` (deterministic)."""
  levels = (1 << check_bits_range(bits)) - 1
  return np.rint(np.clip(weight_ratio, 0.0, 1.0) * levels).astype(np.uint32)
