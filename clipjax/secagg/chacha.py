"""ChaCha20 keystream in jax.numpy (RFC 8439), batched over many streams.

The block function works on 16 uint32 words held as a structure of arrays: word ``i`` of many
blocks is one vector, so each round is a handful of elementwise uint32 operations over a whole
tile of blocks (across all streams at once). ``keystream`` maps over tiles and runs the 10 double
rounds as a ``fori_loop``; there is no Python loop over blocks or streams.

Performance note: XLA:CPU does not fuse a whole ChaCha block into one loop (every intermediate
word feeds two later words, and ``optimization_barrier`` is stripped before fusion), so a double
round becomes ~64 small fused kernels. Under default XLA flags each kernel is a separate runtime
call, and the ``"flat"`` layout with 4096-block tiles reaches ~0.4x pycryptodome's
single-threaded C keystream on the 2-core development CPU. With :data:`FAST_XLA_FLAGS` in
XLA_FLAGS (set before JAX starts), XLA:CPU compiles each small tile loop into one function with
512-bit vectors, and the ``"stream"`` layout (64-block tiles of one stream) reaches ~1.0-1.1x
pycryptodome. ``scripts/bench_chacha.py`` measures both.

On a CPU backend :func:`keystream` therefore uses the host's C ChaCha20 by default
(``impl="host"``): pycryptodome's RFC 8439 keystream, one stream per task on a thread pool (its
calls release the GIL), reached from the jitted program through ``jax.pure_callback``. It is
bit-identical to the jax.numpy implementation (``impl="xla"``, the default on GPU/TPU and under
``CLIPJAX_CHACHA=xla``), and 1.6x faster on one core of the development CPU (0.51 against
0.32 GB/s, ``scripts/bench_chacha.py``); the modular arithmetic around it stays under jit.

Keys and nonces are uint32 words in little-endian order, exactly as RFC 8439 section 2.3 loads
them from bytes, so ``keystream(key_words(k), nonce_words(n), 0, D)`` equals
``Crypto.Cipher.ChaCha20.new(key=k, nonce=n).encrypt(bytes(4 * D))`` read as little-endian uint32.

References:
  Y. Nir, A. Langley. ChaCha20 and Poly1305 for IETF Protocols. RFC 8439, 2018.
  D. J. Bernstein. ChaCha, a variant of Salsa20. SASC 2008.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import checks

WORDS_PER_BLOCK = 16
KEY_WORDS = 8
NONCE_WORDS = 3
MAX_BLOCKS = 1 << 32  # the 32-bit block counter of RFC 8439
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


# Opt-in XLA:CPU flags under which ``keystream`` reaches pycryptodome's speed (see module doc).
# They must be in the XLA_FLAGS environment variable before JAX initialises its CPU backend;
# this module never sets them itself.
FAST_XLA_FLAGS = (
    "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576",
    "--xla_cpu_prefer_vector_width=512",
)
_SMALL_LOOP_THRESHOLD = re.compile(r"xla_cpu_small_while_loop_byte_threshold=(\d+)")


def small_loops_hoisted() -> bool:
  """Whether XLA_FLAGS lets XLA:CPU compile small while loops as one function (>= 1 MiB)."""
  match = _SMALL_LOOP_THRESHOLD.search(os.environ.get("XLA_FLAGS", ""))
  return match is not None and int(match.group(1)) >= 1 << 20


def _initial_words(kn: jax.Array, counter: jax.Array) -> tuple[jax.Array, ...]:
  """RFC 8439 section 2.3 initial state; ``kn`` is ``[..., 11]`` key+nonce words."""
  shape = counter.shape
  words = tuple(jnp.full(shape, w, jnp.uint32) for w in SIGMA)
  words += tuple(jnp.broadcast_to(kn[..., i], shape) for i in range(KEY_WORDS)) + (counter,)
  return words + tuple(jnp.broadcast_to(kn[..., KEY_WORDS + i], shape)
                       for i in range(NONCE_WORDS))


def _block(init: tuple[jax.Array, ...], stack_axis: int) -> jax.Array:
  s = jax.lax.fori_loop(0, 10, lambda _, s: _double_round(s), init)
  return jnp.stack([x + y for x, y in zip(s, init)], axis=stack_axis)


IMPLS = ("host", "xla")
IMPL_ENV = "CLIPJAX_CHACHA"  # "host" or "xla": overrides the backend's default implementation


def default_impl() -> str:
  """``$CLIPJAX_CHACHA`` if set, else "host" on a CPU backend and "xla" elsewhere."""
  impl = os.environ.get(IMPL_ENV, "")
  if impl:
    if impl not in IMPLS:
      raise ValueError(f"{IMPL_ENV}={impl!r} must be one of {', '.join(IMPLS)} (or unset: host "
                       f"C code on a CPU backend, jax.numpy elsewhere)")
    return impl
  return "host" if jax.default_backend() == "cpu" else "xla"


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
  return concurrent.futures.ThreadPoolExecutor(
      max_workers=max(1, len(os.sched_getaffinity(0))), thread_name_prefix="chacha20")


def host_keystream(keys: np.ndarray, nonces: np.ndarray, first_block, num_words: int
                   ) -> np.ndarray:
  """uint32 ``[K, num_words]``: :func:`keystream` computed by pycryptodome on the host.

  Each stream is one task on a thread pool of one thread per available core; pycryptodome's C
  ``encrypt`` releases the GIL, so streams run in parallel. Called by :func:`keystream` through
  ``jax.pure_callback``; also usable directly on numpy arrays.
  """
  from Crypto.Cipher import ChaCha20  # pylint: disable=g-import-not-at-top
  keys = np.ascontiguousarray(keys, dtype="<u4")
  nonces = np.ascontiguousarray(nonces, dtype="<u4")
  offset = 64 * int(np.asarray(first_block))
  out = np.empty((keys.shape[0], num_words), "<u4")
  zeros = bytes(4 * num_words)

  def one(i: int) -> None:
    cipher = ChaCha20.new(key=keys[i].tobytes(), nonce=nonces[i].tobytes())
    if offset:
      cipher.seek(offset)
    cipher.encrypt(zeros, output=memoryview(out[i]).cast("B"))

  if keys.shape[0] <= 1:
    for i in range(keys.shape[0]):
      one(i)
  else:
    list(_pool().map(one, range(keys.shape[0])))
  return out.view(np.uint32)


def _check_counter(first_block, blocks: int) -> None:
  if blocks > MAX_BLOCKS:
    raise ValueError(f"num_words={blocks * WORDS_PER_BLOCK} is {blocks} blocks; one ChaCha20 "
                     f"stream holds at most 2^32 blocks (RFC 8439)")
  if isinstance(first_block, jax.core.Tracer):
    return
  value = np.asarray(first_block)
  if value.shape != () or value.dtype.kind not in "iu":
    raise ValueError(f"first_block={first_block!r} must be an integer scalar")
  if not 0 <= int(value) <= MAX_BLOCKS - blocks:
    raise ValueError(f"first_block={int(value)} with {blocks} blocks per stream would take the "
                     f"32-bit block counter past 2^32 - 1; allowed: 0 <= first_block <= "
                     f"{MAX_BLOCKS - blocks} (RFC 8439: the counter never wraps)")


def keystream(keys: jax.Array, nonces: jax.Array, first_block: jax.Array | int,
              num_words: int, *, tile: int | None = None,
              layout: str | None = None, impl: str | None = None) -> jax.Array:
  """ChaCha20 keystream words of K independent streams.

  ``impl="host"`` computes them with :func:`host_keystream` (``jax.pure_callback``; ``tile``
  and ``layout`` are then unused); ``impl="xla"`` in jax.numpy, in one of two layouts, both a
  ``lax.map`` over tiles of ``tile`` blocks whose 10 double rounds run as a ``fori_loop`` over
  a tuple of 16 word vectors:

  * ``"flat"``: all ``K * num_words / 16`` blocks laid out flat (a tile may span streams; key
    words are gathered per block). Large tiles (4096) amortise XLA:CPU's per-kernel cost; the
    best choice under default XLA flags.
  * ``"stream"``: tiles of 64 consecutive blocks of one stream (each stream padded to whole
    tiles; key words are per-tile scalars). Small tiles stay in L1; fast only when XLA:CPU
    compiles the tile loop as one function, i.e. with :data:`FAST_XLA_FLAGS`.

  ``layout=None`` picks ``"stream"`` when :func:`small_loops_hoisted` and ``"flat"`` otherwise.

  Args:
    keys: uint32 ``[K, 8]`` key words.
    nonces: uint32 ``[K, 3]`` nonce words (RFC 8439 96-bit nonce).
    first_block: uint32 scalar: block counter of the first output word (lets callers expand a
      long stream chunk by chunk: chunk ``j`` of ``W`` words starts at block ``j * W // 16``).
    num_words: static number of words per stream; a multiple of 16.
    tile: static number of blocks computed together (default 4096 flat, 64 stream).
    layout: static ``"flat"``, ``"stream"`` or None (see above).
    impl: static ``"host"``, ``"xla"`` or None (:func:`default_impl`).

  Returns:
    uint32 ``[K, num_words]``: word ``i`` of stream ``k`` is keystream word
    ``16 * first_block + i`` of ``(keys[k], nonces[k])``.

  Raises:
    ValueError: if ``num_words`` is not a positive multiple of 16, ``layout`` or ``impl`` is
      unknown, or the 32-bit block counter would pass 2^32 - 1 (RFC 8439 forbids wrapping it: a
      stream holds at most 2^32 blocks). A traced ``first_block`` cannot be checked here; callers bound it
      (:mod:`clipjax.secagg.blinding` stays below 2^27 blocks).
  """
  if not checks.is_integer(num_words) or num_words <= 0 or num_words % WORDS_PER_BLOCK:
    raise ValueError(f"num_words={num_words!r} must be a positive multiple of 16")
  num_words = int(num_words)
  _check_counter(first_block, num_words // WORDS_PER_BLOCK)
  impl = default_impl() if impl is None else impl
  if impl not in IMPLS:
    raise ValueError(f"impl={impl!r} must be one of {', '.join(IMPLS)}")
  if layout is None:
    layout = "stream" if small_loops_hoisted() else "flat"
  if layout not in ("flat", "stream"):
    raise ValueError(f"layout={layout!r} must be 'flat' or 'stream'")
  chex.assert_rank(keys, 2)
  num_streams = keys.shape[0]
  chex.assert_shape(keys, (num_streams, KEY_WORDS))
  chex.assert_shape(nonces, (num_streams, NONCE_WORDS))
  chex.assert_type([keys, nonces], jnp.uint32)
  blocks_per_stream = num_words // WORDS_PER_BLOCK
  first = jnp.asarray(first_block, jnp.uint32)
  if impl == "host":
    return jax.pure_callback(
        lambda k, n, f: host_keystream(k, n, f, num_words),
        jax.ShapeDtypeStruct((num_streams, num_words), jnp.uint32), keys, nonces, first,
        vmap_method="sequential")
  state = jnp.concatenate([keys, nonces], axis=1)  # [K, 11]

  if layout == "stream":
    tile = max(1, min(64 if tile is None else tile, blocks_per_stream))
    tiles_per_stream = -(-blocks_per_stream // tile)

    def stream_tile(i: jax.Array) -> jax.Array:
      kn = jax.lax.dynamic_index_in_dim(state, i // tiles_per_stream, 0, keepdims=False)
      start = (i % tiles_per_stream).astype(jnp.uint32) * np.uint32(tile)
      counter = first + start + jnp.arange(tile, dtype=jnp.uint32)
      return _block(_initial_words(kn, counter), -1)  # [tile, 16]

    blocks = jax.lax.map(stream_tile, jnp.arange(num_streams * tiles_per_stream, dtype=jnp.int32))
    out = blocks.reshape(num_streams, tiles_per_stream * tile * WORDS_PER_BLOCK)
    return out if tiles_per_stream * tile == blocks_per_stream else out[:, :num_words]

  total = num_streams * blocks_per_stream
  tile = max(1, min(4096 if tile is None else tile, total))
  num_tiles = -(-total // tile)

  def flat_tile(j: jax.Array) -> jax.Array:
    flat = j * np.uint32(tile) + jnp.arange(tile, dtype=jnp.uint32)
    stream = jnp.minimum(flat // np.uint32(blocks_per_stream), np.uint32(num_streams - 1))
    counter = first + flat % np.uint32(blocks_per_stream)
    return _block(_initial_words(state[stream], counter), -1)  # [tile, 16]

  blocks = jax.lax.map(flat_tile, jnp.arange(num_tiles, dtype=jnp.uint32))
  return blocks.reshape(-1)[:total * WORDS_PER_BLOCK].reshape(num_streams, num_words)


def key_words(key: bytes) -> np.ndarray:
  """32 key bytes -> uint32 ``[8]`` little-endian words."""
  if not isinstance(key, (bytes, bytearray)):
    raise ValueError(f"ChaCha20 key must be 32 bytes, got {type(key).__name__}")
  if len(key) != 4 * KEY_WORDS:
    raise ValueError(f"ChaCha20 key must be 32 bytes, got {len(key)}")
  return np.frombuffer(key, dtype="<u4").astype(np.uint32)


def nonce_words(nonce: bytes) -> np.ndarray:
  """12 nonce bytes -> uint32 ``[3]`` little-endian words."""
  if not isinstance(nonce, (bytes, bytearray)):
    raise ValueError(f"ChaCha20 nonce must be 12 bytes (RFC 8439), got {type(nonce).__name__}")
  if len(nonce) != 4 * NONCE_WORDS:
    raise ValueError(f"ChaCha20 nonce must be 12 bytes (RFC 8439), got {len(nonce)}")
  return np.frombuffer(nonce, dtype="<u4").astype(np.uint32)
