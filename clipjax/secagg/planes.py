"""Uploads that follow the link (issue 26, DESIGN 2.10): a b-bit code split into two bit planes.

Client u encodes its update as always (b-bit codes ``q_u``, :mod:`clipjax.secagg.quantize`).
With l low bits (h = b - l high ones) it rounds each code stochastically to the coarse grid,

  ``hi_u = floor(q_u / 2^l) + [v < (q_u mod 2^l)]``, v uniform on ``[0, 2^l)``,

so ``hi_u`` lies in ``[0, 2^h]`` and ``E[2^l hi_u] = q_u`` exactly, and its residual
``r_u = q_u - 2^l hi_u`` lies in ``(-2^l, 2^l)`` with ``E[r_u | q_u] = 0``; it is sent offset,
``lo_u = r_u + 2^l - 1`` in ``[0, 2^(l+1) - 2]``. Every client sends ``hi_u`` in the **high
instance** (one SecAgg(+) run over the whole cohort); a client that is not a network straggler
also sends ``lo_u`` in the **low instance** (a second, independent SecAgg(+) run over those
clients only). The server decodes

  ``2^l sum_{S_hi} hi_u + sum_{S_lo} lo_u - |S_lo| (2^l - 1)``,

which is ``sum_{S_hi} q_u`` exactly when the low survivors are the high survivors that sent a
low plane; a high survivor without a low plane (a network straggler, a low-instance drop-out or
an aborted low instance) contributes ``2^l hi_u``, unbiased for its ``q_u``, and a low survivor
that dropped from the high instance adds a residual of mean zero. So the decoded sum is always
unbiased for ``sum_{S_hi} q_u``; only its variance depends on who sent the low plane.

Rings: the high words sum to at most ``n 2^h`` and the low ones to ``n_lo (2^(l+1) - 2)``, so
each instance masks modulo ``2^m`` with the smallest m that holds its sum (:func:`ring_bits`):
17 bits for h = 12 at n = 20, 18 for the low plane. The simulation masks and sums in uint32 and
reduces each masked word modulo ``2^m`` (:func:`to_ring`): reduction modulo a power of two is a
ring homomorphism of ``Z / 2^32``, so the reduced masked words are what a client sends and
their reduced sum is the exact plane sum. The weight code (the vector's last word) rides whole
in the high instance (32-bit ring) and is zero in the low one. The stochastic rounding's
uniforms come from the client's rounding key under a nonce of their own (:data:`PLANE_NONCE`),
by coordinate, so both instances see the same ``q_u``, ``hi_u`` and ``lo_u`` however the
clients are chunked.

References:
  A. Elkordy and S. Avestimehr. Secure Aggregation with Heterogeneous
  Quantization in Federated Learning. arXiv 2009.14388 (heterogeneous precision under SecAgg;
  its segment grouping is the alternative not chosen: docs/secagg.md).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import checks

PLANES = ("high", "low")
PLANE_NONCE = np.array([0x706C616E, 0, 0], np.uint32)  # "plan": apart from the rounding noise
UPLOADS = ("padded", "planes")
DEFAULT_HIGH_BITS = 12


@dataclasses.dataclass(frozen=True)
class Plane:
  """Which plane an instance sums (static: it picks the jitted encoder).

  Attributes:
    which: "high" or "low".
    low_bits: l, the bits below the high plane.
    ring: m, bits of the instance's ring (masked words are sent modulo 2^m).
  """

  which: str
  low_bits: int
  ring: int

  @property
  def encoder_key(self) -> "Plane":
    """This plane with the ring set aside (32): what the encoder depends on, so the ring adds
    no compilation of its own. (A low instance of another size still compiles its chunk shape
    once: its chunks have as many rows as it has members.)"""
    return dataclasses.replace(self, ring=32)

  def __post_init__(self):
    if self.which not in PLANES:
      raise ValueError(f"plane {self.which!r} must be one of {PLANES}")
    if not checks.is_integer(self.low_bits) or not 1 <= self.low_bits <= 23:
      raise ValueError(f"low_bits={self.low_bits!r} must be an integer in [1, 23]")
    if not checks.is_integer(self.ring) or not 1 <= self.ring <= 32:
      raise ValueError(f"ring={self.ring!r} must be an integer in [1, 32] bits")


def check_high_bits(high_bits, bits: int) -> int:
  """h as an int in [1, b - 1], or ValueError naming the fix."""
  if not checks.is_integer(high_bits) or not 1 <= high_bits < bits:
    raise ValueError(f"clip.high_bits={high_bits!r} must be an integer in [1, {bits - 1}]: the "
                     f"high plane keeps h of the b={bits} quantisation bits (secagg.bits) and "
                     "the low plane the rest")
  return int(high_bits)


def max_plane_value(which: str, low_bits: int, bits: int) -> int:
  """The largest word one client puts in a plane: ``2^h`` (high) or ``2^(l+1) - 2`` (low)."""
  return (1 << (bits - low_bits)) if which == "high" else (1 << (low_bits + 1)) - 2


def ring_bits(num_clients: int, which: str, low_bits: int, bits: int) -> int:
  """The fewest bits m with ``num_clients * max_plane_value < 2^m``: the instance's ring."""
  if not checks.is_integer(num_clients) or num_clients < 1:
    raise ValueError(f"num_clients={num_clients!r} must be an integer >= 1")
  top = int(num_clients) * max_plane_value(which, low_bits, bits)
  bits_needed = max(1, math.ceil(math.log2(top + 1)))
  if bits_needed > 32:
    raise ValueError(f"{num_clients} clients' {which} planes sum to up to {top}, more than 32 "
                     "bits hold; lower clip.high_bits (high plane), secagg.bits (low plane) or "
                     "the cohort")
  return bits_needed


def rings(num_clients: int, num_low: int, low_bits: int, bits: int) -> tuple[int, int]:
  """(high ring bits over ``num_clients``, low ring bits over ``num_low``) of one round; a
  low instance of no client gets one client's ring."""
  return (ring_bits(num_clients, "high", low_bits, bits),
          ring_bits(max(num_low, 1), "low", low_bits, bits))


def split(q: jax.Array, noise: jax.Array, low_bits: int) -> tuple[jax.Array, jax.Array]:
  """(hi, lo) of uint32 b-bit codes ``q`` (see the module docstring); jnp, any shape.

  Args:
    q: uint32 codes.
    noise: uint32 uniform words, one per code (their top l bits are the uniform v).
    low_bits: l (static).
  """
  mask = np.uint32((1 << low_bits) - 1)
  up = (noise >> np.uint32(32 - low_bits)) < (q & mask)
  hi = (q >> np.uint32(low_bits)) + up.astype(jnp.uint32)
  lo = q + mask - (hi << np.uint32(low_bits))  # r + 2^l - 1, never below 0
  return hi, lo


def to_ring(words: jax.Array, ring: int, dim: int) -> jax.Array:
  """``words`` (uint32 ``[..., L]``) with the first ``dim`` reduced modulo 2^ring: what is sent
  (the weight word, index ``dim``, and padding stay whole)."""
  if ring >= 32:
    return words
  pos = jnp.arange(words.shape[-1])
  return jnp.where(pos < dim, words & np.uint32((1 << ring) - 1), words)


def combine(high_sum: np.ndarray, low_sum: np.ndarray | None, low_count: int,
            low_bits: int) -> np.ndarray:
  """int64 ``2^l sum hi + sum lo - low_count (2^l - 1)``: the decoded sum of the codes.

  Args:
    high_sum: the high instance's unmasked sum of its D data words (exact integers).
    low_sum: the low instance's, or None when it sent nothing (aborted, or nobody in it).
    low_count: clients whose low plane is in ``low_sum``.
    low_bits: l.
  """
  total = np.asarray(high_sum, np.uint32).astype(np.int64) << low_bits
  if low_sum is not None:
    total += np.asarray(low_sum, np.uint32).astype(np.int64)
    total -= int(low_count) * ((1 << low_bits) - 1)
  return total


def wire_bytes(num_params: int, ring: int, extra_words: int = 0) -> int:
  """Bytes of one masked plane of ``num_params`` words packed at ``ring`` bits, plus
  ``extra_words`` whole 32-bit words (the weight code, the time histograms)."""
  return -(-int(num_params) * int(ring) // 8) + 4 * int(extra_words)
