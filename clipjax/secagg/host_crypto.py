"""Host-only cryptography for SecAgg (pycryptodome): X25519, HKDF-SHA256, AES-GCM, randomness.

Nothing here is traced by JAX. Functions take and return ``bytes``; the protocol engine turns the
derived 32-byte keys into uint32 words before they enter jitted code.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017 (key agreement, authenticated encryption of shares).
  A. Langley, M. Hamburg, S. Turner. Elliptic Curves for Security. RFC 7748, 2016 (X25519).
  H. Krawczyk, P. Eronen. HMAC-based Extract-and-Expand Key Derivation Function. RFC 5869, 2010.
"""

from __future__ import annotations

import os
import struct

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol import DH
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

# HKDF "info" labels: one X25519 agreement never yields the same key for two purposes.
INFO_SHARES = b"clipjax/secagg/v1/share-encryption"
INFO_PEER = b"clipjax/secagg/v1/peer-message"
INFO_MASK = b"clipjax/secagg/v1/pairwise-mask"


class Randomness:
  """Source of secret host random bytes: always the OS (``os.urandom``).

  Key material (X25519 private keys, self-mask seeds, Shamir coefficients, AES-GCM nonces) never
  comes from a seed: a seeded stream is known to anyone who knows the seed, and two runs with the
  same seed would reuse masks. Simulations stay reproducible without it because masks cancel
  exactly; the seed drives only public or simulated choices (graph, drop-outs, rounding noise).
  """

  def bytes(self, n: int) -> bytes:
    return os.urandom(n)

  def below(self, bound: int) -> int:
    """Uniform integer in ``[0, bound)`` by rejection sampling."""
    nbytes = (bound.bit_length() + 7) // 8 + 8
    while True:
      value = int.from_bytes(self.bytes(nbytes), "little")
      limit = (1 << (8 * nbytes)) - (1 << (8 * nbytes)) % bound
      if value < limit:
        return value % bound


def x25519_keypair(rng: Randomness) -> tuple[bytes, bytes]:
  """A fresh X25519 key pair ``(private 32 bytes, public 32 bytes)`` (RFC 7748 encoding)."""
  private = rng.bytes(KEY_BYTES)
  return private, x25519_public(private)


def x25519_public(private: bytes) -> bytes:
  return ECC.construct(curve="Curve25519", seed=private).public_key().export_key(format="raw")


def agree(private: bytes, peer_public: bytes, info: bytes) -> bytes:
  """X25519(private, peer_public) -> HKDF-SHA256 -> 32 bytes bound to ``info``.

  Raises:
    ValueError: from pycryptodome if ``peer_public`` is not a valid point.
  """
  priv = ECC.construct(curve="Curve25519", seed=private)
  pub = DH.import_x25519_public_key(peer_public)
  return DH.key_agreement(
      static_priv=priv, static_pub=pub,
      kdf=lambda z: HKDF(z, KEY_BYTES, salt=b"", hashmod=SHA256, context=info))


def associated_data(sender: int, receiver: int, round_index: int, purpose: bytes) -> bytes:
  """AES-GCM associated data binding sender, receiver, round and purpose."""
  return purpose + struct.pack("<QQQ", sender, receiver, round_index)


def seal(key: bytes, plaintext: bytes, aad: bytes, rng: Randomness) -> bytes:
  """AES-256-GCM: returns ``nonce || ciphertext || tag``."""
  nonce = rng.bytes(NONCE_BYTES)
  cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
  cipher.update(aad)
  body, tag = cipher.encrypt_and_digest(plaintext)
  return nonce + body + tag


def sealed_size(plaintext_bytes: int) -> int:
  """Bytes :func:`seal` returns for a plaintext of ``plaintext_bytes`` (nonce, body, tag)."""
  return NONCE_BYTES + int(plaintext_bytes) + TAG_BYTES


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
  """Inverse of :func:`seal`.

  Raises:
    ValueError: if the message is truncated, tampered with, or bound to other associated data.
  """
  if len(sealed) < NONCE_BYTES + TAG_BYTES:
    raise ValueError(f"sealed message of {len(sealed)} bytes is shorter than nonce + tag "
                     f"({NONCE_BYTES + TAG_BYTES} bytes)")
  nonce, body, tag = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:-TAG_BYTES], sealed[-TAG_BYTES:]
  cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=TAG_BYTES)
  cipher.update(aad)
  try:
    return cipher.decrypt_and_verify(body, tag)
  except ValueError as err:
    raise ValueError("AES-GCM authentication failed: the message was tampered with or is not "
                     "from the claimed sender to this receiver in this round") from err
