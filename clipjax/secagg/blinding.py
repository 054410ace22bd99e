"""Device side of SecAgg: all clients' masked inputs, the server sum and unmasking, in uint32.

Client u's message is ``y_u = q_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)`` (mod
2^32), where ``q_u`` is its encoded update, ``b_u`` its self-blind seed and ``s_uv`` the pairwise
seed agreed with neighbour v. PRG is the ChaCha20 keystream (:mod:`clipjax.secagg.chacha`, zero
nonce: every seed is fresh per aggregation). Each pairwise stream is expanded once per edge and
scattered with + to its lower endpoint and - to its upper one. The vector axis is processed in
chunks of ``chunk_words`` (a ``fori_loop``), so the live keystream is ``[K, chunk_words]`` however
large ``C * D`` is. Encoding (:func:`encode_rows`) and blinding (:func:`add_blinds`) are separate
steps, so ``simulate=sum`` runs the very same encoder without the blinds. These functions are
pure; callers ``jax.jit`` them with the static arguments.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017, section 4 (masking with self and pairwise masks, unmasking).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import chacha, planes, quantize

DEFAULT_BUDGET_WORDS = 1 << 23  # live keystream words per chunk (32 MiB)
_ZERO_NONCE = np.zeros(3, np.uint32)


def chunk_words_for(num_streams: int, length: int, budget: int = DEFAULT_BUDGET_WORDS) -> int:
  """Static chunk size: a multiple of 16 with ``num_streams * chunk <= budget`` (at least 16).

  The fewest chunks the budget allows, split evenly (to within a block), so the last chunk is
  not mostly padding: 20 streams of 437,151 words took two chunks of 419,424 words (92% of the
  second one padding, the FEMNIST round's encoder ran twice the work), now two of 218,576.
  Every word's keystream position and arithmetic are the same whatever the chunk, so the
  output is too.
  """
  blocks = max(1, -(-length // 16))
  by_budget = max(1, budget // max(num_streams, 1) // 16)  # blocks per chunk the budget allows
  chunks = -(-blocks // by_budget)
  return 16 * -(-blocks // chunks)


def _nonces(count: int, nonce: np.ndarray) -> jax.Array:
  return jnp.broadcast_to(jnp.asarray(nonce), (count, 3))


def encode_rows(updates: jax.Array, scale_hi: jax.Array, scale_lo: jax.Array,
                weight_code: jax.Array, noise_keys: jax.Array, *, clip: float, bits: int,
                chunk_words: int, plane: planes.Plane | None = None) -> jax.Array:
  """The encoded inputs ``q_u`` of C clients (``[C, D + 1]``: the weight code is the last word).

  The one encoder both simulations run (``simulate=protocol`` blinds its output with
  :func:`add_blinds`, ``simulate=sum`` sums it as it is): callers jit it once and call that
  executable from both, so no compiler can contract its float steps differently in one path.

  Args:
    updates: float32 ``[C, D]`` finite client updates.
    scale_hi, scale_lo: float32 ``[C]`` pair of ``r / (2 c)`` (:func:`quantize.scale_pair`).
    weight_code: uint32 ``[C]`` encoded weight r, appended as coordinate D.
    noise_keys: uint32 ``[C, 8]`` ChaCha20 keys of the stochastic rounding.
    clip: clipping bound c.
    bits: quantisation bits b.
    chunk_words: static chunk length (multiple of 16).
    plane: None (the whole b-bit codes), or the bit plane of the codes this instance sums
      (:mod:`clipjax.secagg.planes`: the high plane keeps the weight code, the low plane has
      0 there).

  Returns:
    uint32 ``[C, D + 1]`` codes.
  """
  num_c, dim = updates.shape
  chex.assert_shape([scale_hi, scale_lo, weight_code], (num_c,))
  chex.assert_shape(noise_keys, (num_c, 8))
  chex.assert_type([noise_keys, weight_code], jnp.uint32)
  length = dim + 1
  num_chunks = -(-length // chunk_words)
  padded = jnp.pad(updates.astype(jnp.float32), ((0, 0), (0, num_chunks * chunk_words - dim)))
  nonces = _nonces(num_c, quantize.NOISE_NONCE)
  plane_nonces = _nonces(num_c, planes.PLANE_NONCE)

  def body(j, out):
    start = j * chunk_words
    noise = chacha.keystream(noise_keys, nonces, (start // 16).astype(jnp.uint32), chunk_words)
    x = jax.lax.dynamic_slice_in_dim(padded, start, chunk_words, axis=1)
    q = quantize.encode(x, noise, scale_hi[:, None], scale_lo[:, None], clip, bits)
    pos = start + jnp.arange(chunk_words)
    weight = weight_code[:, None]
    if plane is not None:
      split_noise = chacha.keystream(noise_keys, plane_nonces, (start // 16).astype(jnp.uint32),
                                     chunk_words)
      hi, lo = planes.split(q, split_noise, plane.low_bits)
      q = hi if plane.which == "high" else lo
      weight = weight if plane.which == "high" else jnp.zeros_like(weight)
    q = jnp.where(pos == dim, weight, q)
    q = jnp.where(pos > dim, np.uint32(0), q)
    return jax.lax.dynamic_update_slice_in_dim(out, q, start, axis=1)

  out = jnp.zeros((num_c, num_chunks * chunk_words), jnp.uint32)
  return jax.lax.fori_loop(0, num_chunks, body, out)[:, :length]


def add_blinds(encoded: jax.Array, self_keys: jax.Array, edge_keys: jax.Array,
               edge_lo: jax.Array, edge_hi: jax.Array, *, chunk_words: int) -> jax.Array:
  """Blinds C encoded inputs: what the server receives.

  Args:
    encoded: uint32 ``[C, L]`` encoded inputs (:func:`encode_rows`).
    self_keys: uint32 ``[C, 8]`` self-blind seeds ``b_u``.
    edge_keys: uint32 ``[E, 8]`` pairwise seeds ``s_uv``.
    edge_lo: int32 ``[E]`` row (in 0..C-1) of the lower endpoint, or C if it sends nothing.
    edge_hi: int32 ``[E]`` row of the upper endpoint, or C.
    chunk_words: static chunk length (multiple of 16).

  Returns:
    uint32 ``[C, L]`` blinded messages.
  """
  num_c, length = encoded.shape
  num_e = edge_keys.shape[0]
  chex.assert_shape(self_keys, (num_c, 8))
  chex.assert_shape(edge_keys, (num_e, 8))
  chex.assert_shape([edge_lo, edge_hi], (num_e,))
  chex.assert_type([encoded, self_keys, edge_keys], jnp.uint32)
  num_chunks = -(-length // chunk_words)
  padded = jnp.pad(encoded, ((0, 0), (0, num_chunks * chunk_words - length)))
  keys = jnp.concatenate([self_keys, edge_keys], axis=0)
  nonces = _nonces(num_c + num_e, _ZERO_NONCE)

  def body(j, out):
    start = j * chunk_words
    ks = chacha.keystream(keys, nonces, (start // 16).astype(jnp.uint32), chunk_words)
    pair = ks[num_c:]
    plus = jax.ops.segment_sum(pair, edge_lo, num_segments=num_c + 1)[:num_c]
    minus = jax.ops.segment_sum(pair, edge_hi, num_segments=num_c + 1)[:num_c]
    q = jax.lax.dynamic_slice_in_dim(out, start, chunk_words, axis=1)
    return jax.lax.dynamic_update_slice_in_dim(out, q + ks[:num_c] + plus - minus, start, axis=1)

  return jax.lax.fori_loop(0, num_chunks, body, padded)[:, :length]


def encode_inputs(updates: jax.Array, scale_hi: jax.Array, scale_lo: jax.Array,
                  weight_code: jax.Array, noise_keys: jax.Array, *, clip: float,
                  bits: int) -> jax.Array:
  """The unblinded encoded inputs ``q_u`` (``[C, D + 1]``): the oracle for exactness tests."""
  num_c, dim = updates.shape
  words = -(-dim // 16) * 16
  ks = chacha.keystream(noise_keys, _nonces(num_c, quantize.NOISE_NONCE), 0, words)
  q = quantize.encode(updates.astype(jnp.float32), ks[:, :dim], scale_hi[:, None],
                      scale_lo[:, None], clip, bits)
  return jnp.concatenate([q, weight_code[:, None]], axis=1)


def server_sum(messages: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Sum of the received ``[C, L]`` uint32 messages, mod 2^32.

  Args:
    messages: uint32 ``[C, L]`` messages.
    valid: optional bool ``[C]``: sum only these rows (the others are padding or were never
      sent).
  """
  chex.assert_type(messages, jnp.uint32)
  if valid is not None:
    chex.assert_shape(valid, messages.shape[:1])
    messages = jnp.where(valid[:, None], messages, jnp.zeros((), jnp.uint32))
  return jnp.sum(messages, axis=0, dtype=jnp.uint32)


def unblind(total: jax.Array, self_keys: jax.Array, edge_keys: jax.Array,
            edge_negated: jax.Array, *, chunk_words: int) -> jax.Array:
  """Removes survivors' self blinds and the pairwise blinds shared with dropped clients.

  Args:
    total: uint32 ``[L]`` server sum of the survivors' messages.
    self_keys: uint32 ``[S, 8]`` reconstructed self-blind seeds of all survivors.
    edge_keys: uint32 ``[F, 8]`` reconstructed seeds of edges (survivor, dropped client).
    edge_negated: bool ``[F]``: the survivor subtracted this stream (it is the upper endpoint).
    chunk_words: static chunk length (multiple of 16).

  Returns:
    uint32 ``[L]``: the sum of the survivors' encoded inputs.
  """
  (length,) = total.shape
  num_s, num_f = self_keys.shape[0], edge_keys.shape[0]
  chex.assert_shape(edge_negated, (num_f,))
  keys = jnp.concatenate([self_keys, edge_keys], axis=0)
  nonces = _nonces(num_s + num_f, _ZERO_NONCE)
  coef = jnp.concatenate([jnp.ones((num_s,), jnp.uint32),
                          jnp.where(edge_negated, np.uint32(0xFFFFFFFF), np.uint32(1))])
  num_chunks = -(-length // chunk_words)
  padded = jnp.pad(total, (0, num_chunks * chunk_words - length))

  def body(j, out):
    start = j * chunk_words
    ks = chacha.keystream(keys, nonces, (start // 16).astype(jnp.uint32), chunk_words)
    blind = jnp.sum(ks * coef[:, None], axis=0, dtype=jnp.uint32)
    chunk = jax.lax.dynamic_slice_in_dim(out, start, chunk_words) - blind
    return jax.lax.dynamic_update_slice_in_dim(out, chunk, start, axis=0)

  return jax.lax.fori_loop(0, num_chunks, body, padded)[:length]
