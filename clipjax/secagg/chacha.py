"""ChaCha20 keystream in jax.numpy (RFC 8439), batched over many streams.

The block function works on 16 uint32 words held as a structure of arrays: word ``i`` of many
blocks is one vector, so each round is a handful of elementwise uint32 operations over a whole
tile of blocks (across all streams at once). ``keystream`` maps over tiles and runs the 10 double
rounds as a ``fori_loop``; there is no Python loop over blocks or streams.

Performance note: XLA:CPU does not fuse a whole ChaCha block into one loop (every intermediate
word feeds two later words), so a double round becomes ~36 small fused kernels; tiles keep their
operands in cache. On the 2-core development CPU this reaches roughly half of pycryptodome's
single-threaded C keystream (see ``scripts/bench_secagg.py``).

Keys and nonces are uint32 words in little-endian order, exactly as RFC 8439 section 2.3 loads
them from bytes, so ``keystream(key_words(k), nonce_words(n), 0, D)`` equals
``Crypto.Cipher.ChaCha20.new(key=k, nonce=n).encrypt(bytes(4 * D))`` read as little-endian uint32.

References:
  Y. Nir, A. Langley. ChaCha20 and Poly1305 for IETF Protocols. RFC 8439, 2018.
  D. J. Bernstein. ChaCha, a variant of Salsa20. SASC 2008.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

WORDS_PER_BLOCK = 16
KEY_WORDS = 8
NONCE_WORDS = 3
# "expand 32-byte k" as four little-endian words (RFC 8439 section 2.3).
SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)


def _rotl(x: jax.Array, n: int) -> jax.Array:
  return (x << np.uint32(n)) | (x >> np.uint32(32 - n))


def _quarter_round(s: list[jax.Array], a: int, b: int, c: int, d: int) -> None:
  """RFC 8439 section 2.1 quarter round, in place on the list of word arrays."""
  s[a] = s[a] + s[b]
  s[d] = _rotl(s[d] ^ s[a], 16)
  s[c] = s[c] + s[d]
  s[b] = _rotl(s[b] ^ s[c], 12)
  s[a] = s[a] + s[b]
  s[d] = _rotl(s[d] ^ s[a], 8)
  s[c] = s[c] + s[d]
  s[b] = _rotl(s[b] ^ s[c], 7)


def _double_round(s: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
  w = list(s)
  for q in ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
            (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14)):
    _quarter_round(w, *q)
  return tuple(w)


def keystream(keys: jax.Array, nonces: jax.Array, first_block: jax.Array | int,
              num_words: int, *, tile: int = 4096) -> jax.Array:
  """ChaCha20 keystream words of K independent streams.

  All ``K * num_words / 16`` blocks are laid out flat and processed in tiles of ``tile`` blocks
  (``lax.map``); inside a tile the 10 double rounds run as a ``fori_loop`` over a tuple of 16
  word vectors. Tiles keep the 16 working vectors in cache: XLA cannot fuse a whole ChaCha
  block (each word feeds several later words), so unfused intermediates must stay small.

  Args:
    keys: uint32 ``[K, 8]`` key words.
    nonces: uint32 ``[K, 3]`` nonce words (RFC 8439 96-bit nonce).
    first_block: uint32 scalar: block counter of the first output word (lets callers expand a
      long stream chunk by chunk: chunk ``j`` of ``W`` words starts at block ``j * W // 16``).
    num_words: static number of words per stream; a multiple of 16.
    tile: static number of blocks computed together.

  Returns:
    uint32 ``[K, num_words]``: word ``i`` of stream ``k`` is keystream word
    ``16 * first_block + i`` of ``(keys[k], nonces[k])``.

  Raises:
    ValueError: if ``num_words`` is not a positive multiple of 16.
  """
  if num_words <= 0 or num_words % WORDS_PER_BLOCK:
    raise ValueError(f"num_words={num_words} must be a positive multiple of 16")
  chex.assert_rank(keys, 2)
  num_streams = keys.shape[0]
  chex.assert_shape(keys, (num_streams, KEY_WORDS))
  chex.assert_shape(nonces, (num_streams, NONCE_WORDS))
  chex.assert_type([keys, nonces], jnp.uint32)
  blocks_per_stream = num_words // WORDS_PER_BLOCK
  total = num_streams * blocks_per_stream
  tile = max(1, min(tile, total))
  num_tiles = -(-total // tile)
  first = jnp.asarray(first_block, jnp.uint32)
  state = jnp.concatenate([keys, nonces], axis=1)  # [K, 11]

  def one_tile(j: jax.Array) -> jax.Array:
    flat = j * np.uint32(tile) + jnp.arange(tile, dtype=jnp.uint32)
    stream = jnp.minimum(flat // np.uint32(blocks_per_stream), np.uint32(num_streams - 1))
    counter = first + flat % np.uint32(blocks_per_stream)
    kn = state[stream]  # [tile, 11]
    init = tuple(jnp.full((tile,), w, jnp.uint32) for w in SIGMA)
    init += tuple(kn[:, i] for i in range(KEY_WORDS)) + (counter,)
    init += tuple(kn[:, KEY_WORDS + i] for i in range(NONCE_WORDS))
    s = jax.lax.fori_loop(0, 10, lambda _, s: _double_round(s), init)
    return jnp.stack([x + y for x, y in zip(s, init)], axis=-1)  # [tile, 16]

  blocks = jax.lax.map(one_tile, jnp.arange(num_tiles, dtype=jnp.uint32))
  return blocks.reshape(-1)[:total * WORDS_PER_BLOCK].reshape(num_streams, num_words)


def key_words(key: bytes) -> np.ndarray:
  """32 key bytes -> uint32 ``[8]`` little-endian words."""
  if len(key) != 4 * KEY_WORDS:
    raise ValueError(f"ChaCha20 key must be 32 bytes, got {len(key)}")
  return np.frombuffer(key, dtype="<u4").astype(np.uint32)


def nonce_words(nonce: bytes) -> np.ndarray:
  """12 nonce bytes -> uint32 ``[3]`` little-endian words."""
  if len(nonce) != 4 * NONCE_WORDS:
    raise ValueError(f"ChaCha20 nonce must be 12 bytes (RFC 8439), got {len(nonce)}")
  return np.frombuffer(nonce, dtype="<u4").astype(np.uint32)
