"""Shamir t-of-n secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

pycryptodome's ``Shamir`` shares 16-byte secrets in GF(2^128) in pure Python, which is both too
small for the 32-byte seeds and X25519 keys of SecAgg and slow (O(n t) field products per secret
in interpreted code). Here a whole 32-byte secret is one element of the prime field of the
Mersenne prime p = 2^521 - 1 (p > 2^256, so every secret is a field element), and Python's
big-integer arithmetic does the work. Holder ``i`` gets the point ``(i + 1, f(i + 1))``; any t
points determine f and f(0) = secret; any t - 1 points are independent of the secret.

References:
  A. Shamir. How to share a secret. Communications of the ACM 22(11), 1979.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from clipjax.secagg import checks
from clipjax.secagg.host_crypto import Randomness

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def _check_threshold(threshold) -> int:
  if not checks.is_integer(threshold) or threshold < 1:
    raise ValueError(f"threshold={threshold!r} must be an integer >= 1 (shares needed to "
                     "reconstruct)")
  return int(threshold)


def _check_holder(holder) -> int:
  # Holder h gets f(h + 1): a negative id could be handed f(0), the secret itself.
  if not checks.is_integer(holder) or holder < 0:
    raise ValueError(f"holder id {holder!r} must be a non-negative integer (client id)")
  return int(holder)


def split(secret: bytes, threshold: int, holders: Iterable[int],
          rng: Randomness) -> dict[int, bytes]:
  """Shares of ``secret`` for each holder id; any ``threshold`` of them reconstruct it.

  Raises:
    ValueError: if the secret is not 32 bytes, the holders are not distinct non-negative integer
      ids, or threshold is not an integer in [1, number of holders].
  """
  if not isinstance(secret, (bytes, bytearray)):
    raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {type(secret).__name__}")
  if isinstance(holders, (str, bytes)) or not isinstance(holders, Iterable):
    raise ValueError(f"holders={holders!r} must be a sequence of client ids")
  holders = [_check_holder(h) for h in holders]
  if len(set(holders)) < len(holders):
    raise ValueError(f"holders {sorted(holders)} repeat an id; each holder gets one share")
  threshold = _check_threshold(threshold)
  if len(secret) != SECRET_BYTES:
    raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
  if not 1 <= threshold <= len(holders):
    raise ValueError(f"threshold={threshold} must be in [1, {len(holders)}] (number of holders)")
  coeffs = [int.from_bytes(secret, "little")]
  coeffs += [rng.below(PRIME) for _ in range(threshold - 1)]
  shares = {}
  for holder in holders:
    x = holder + 1
    y = 0
    for c in reversed(coeffs):  # Horner
      y = (y * x + c) % PRIME
    shares[holder] = y.to_bytes(SHARE_BYTES, "little")
  return shares


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
  """Reconstructs the secret from at least ``threshold`` shares (uses the first ``threshold``).

  Raises:
    ValueError: if fewer than ``threshold`` shares are given, or shares is not a mapping of
      non-negative integer holder ids to share bytes.
  """
  if not isinstance(shares, Mapping):
    raise ValueError(f"shares must be a mapping holder id -> share bytes (as split returns), "
                     f"got {type(shares).__name__}")
  threshold = _check_threshold(threshold)
  for holder, share in shares.items():
    _check_holder(holder)
    if not isinstance(share, (bytes, bytearray)) or len(share) != SHARE_BYTES:
      raise ValueError(f"share of holder {holder} must be {SHARE_BYTES} bytes (as split returns), "
                       f"got {type(share).__name__} {share!r:.40}")
  if len(shares) < threshold:
    raise ValueError(f"need {threshold} shares to reconstruct, got {len(shares)}")
  points = [(int(h) + 1, int.from_bytes(s, "little"))
            for h, s in sorted(shares.items())[:threshold]]
  secret = 0
  for i, (xi, yi) in enumerate(points):
    num, den = 1, 1
    for j, (xj, _) in enumerate(points):
      if i != j:
        num = num * (-xj) % PRIME
        den = den * (xi - xj) % PRIME
    secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
  if secret >= 1 << (8 * SECRET_BYTES):
    raise ValueError("reconstructed value is not a 32-byte secret: inconsistent shares")
  return secret.to_bytes(SECRET_BYTES, "little")
