"""Fixed-point encoding of (weighted) float updates into the uint32 field and back.

A client's float vector ``x`` is clipped to ``[-c, c]``, mapped affinely to ``[0, 2^b - 1]`` and
rounded stochastically: ``q = floor(z + u)`` with ``u`` uniform in [0, 1), so ``E[q] = z``
(unbiased). The uniforms come from a ChaCha20 stream keyed per client and indexed by coordinate,
so encoding a vector chunk by chunk gives the same result as encoding it whole. Sums of n such
values are exact in uint32 as long as ``n * (2^b - 1) < 2^32``.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017 (fixed-point inputs summed in Z_R).
  P. Kairouz et al. The Distributed Discrete Gaussian Mechanism for Federated Learning with
  Secure Aggregation. ICML 2021 (clipping, scaling and stochastic rounding before SecAgg).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import chacha

MAX_BITS = 24  # float32 holds every integer of [0, 2^24] exactly: finer grids would be biased.
NOISE_NONCE = np.array([0x6E6F6973, 0, 0], np.uint32)  # "nois": separates noise from blinds.


def max_safe_bits(num_clients: int) -> int:
  """Largest b with ``num_clients * (2^b - 1) <= 2^32 - 1`` (capped at MAX_BITS)."""
  bits = 0
  while bits < MAX_BITS and num_clients * ((1 << (bits + 1)) - 1) <= 0xFFFFFFFF:
    bits += 1
  return bits


def check_bits(num_clients: int, bits: int) -> None:
  """Raises ValueError unless b-bit values of ``num_clients`` clients sum without wrapping."""
  if not 1 <= bits <= MAX_BITS:
    raise ValueError(f"bits={bits} must be in [1, {MAX_BITS}]")
  if num_clients * ((1 << bits) - 1) > 0xFFFFFFFF:
    raise ValueError(
        f"overflow: n * (2^b - 1) = {num_clients} * (2^{bits} - 1) does not fit in 32 bits; "
        f"with n={num_clients} clients the largest safe bits is {max_safe_bits(num_clients)}")


def uniform_noise(noise_key: jax.Array, first_block: jax.Array | int,
                  num_words: int) -> jax.Array:
  """float32 ``[num_words]`` uniforms in [0, 1) at coordinates ``16 * first_block + i``."""
  words = chacha.keystream(noise_key[None], jnp.asarray(NOISE_NONCE)[None], first_block,
                           num_words)[0]
  return (words >> np.uint32(8)).astype(jnp.float32) * np.float32(2.0 ** -24)


def encode(x: jax.Array, noise: jax.Array, clip: float, bits: int) -> jax.Array:
  """Clip, scale and stochastically round float32 ``x`` to uint32 in ``[0, 2^b - 1]``."""
  levels = np.float32((1 << bits) - 1)
  z = (jnp.clip(x, -clip, clip) + np.float32(clip)) * (levels / np.float32(2 * clip))
  return jnp.clip(jnp.floor(z + noise), 0, levels).astype(jnp.uint32)


def decode(total: jax.Array, count: jax.Array | int, clip: float, bits: int) -> jax.Array:
  """Inverse affine map of a sum of ``count`` encoded values: float32 sum of the clipped inputs."""
  step = np.float32(2 * clip / ((1 << bits) - 1))
  return (total.astype(jnp.float32) * step
          - jnp.asarray(count, jnp.float32) * np.float32(clip))


def encode_weight(weight_ratio: np.ndarray, bits: int) -> np.ndarray:
  """Public weight ratios in [0, 1] -> uint32 ``round(r * (2^b - 1))`` (deterministic)."""
  levels = (1 << bits) - 1
  return np.rint(np.clip(weight_ratio, 0.0, 1.0) * levels).astype(np.uint32)
