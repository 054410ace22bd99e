"""Cutting model inputs and labels out of ONE client's packed data (pure, jittable)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def example_batch(
    kind: str,
    x_client: jax.Array,
    y_client: jax.Array,
    idx: jax.Array,
    *,
    seq_len: int = 80,
) -> tuple[jax.Array, jax.Array]:
  """Model inputs and labels for example indices ``idx`` of one client.

  Pure and jittable (``kind`` and ``seq_len`` are static); ``jax.vmap`` it over clients.
  Indices are not checked against ``valid``: callers mask padded examples with it.

  Args:
    kind: "images" or "text".
    x_client: images uint8 [N, H, W, ch]; text uint8 [L] symbol ids.
    y_client: images int [N]; text: unused (int32 [0]).
    idx: int32 [B] example indices (images: image slots; text: window starts).
    seq_len: text window length.

  Returns:
    images: float32 [B, H, W, ch] = x / 255 and int32 [B] labels;
    text: int32 [B, seq_len] windows ``x[i : i + seq_len]`` and int32 [B] labels
    ``x[i + seq_len]``.

  Raises:
    ValueError: for an unknown ``kind``.
  """
  idx = jnp.asarray(idx, dtype=jnp.int32)
  if kind == "images":
    inputs = jnp.asarray(x_client)[idx].astype(jnp.float32) / jnp.float32(255.0)
    return inputs, jnp.asarray(y_client)[idx].astype(jnp.int32)
  if kind == "text":
    text = jnp.asarray(x_client).astype(jnp.int32)
    offsets = jnp.arange(seq_len, dtype=jnp.int32)
    inputs = text[idx[:, None] + offsets[None, :]]
    return inputs, text[idx + jnp.int32(seq_len)]
  raise ValueError(f"Unknown data kind {kind!r}; expected 'images' or 'text'.")


def pooled_batch(
    kind: str,
    x: jax.Array,
    y: jax.Array,
    client: jax.Array,
    idx: jax.Array,
    *,
    seq_len: int = 80,
) -> tuple[jax.Array, jax.Array]:
  """Inputs and labels of examples drawn from several clients' packed data at once.

  The pooled counterpart of ``example_batch`` (same values for the same example): example
  ``b`` is slot ``idx[b]`` of client ``client[b]``, gathered straight from the ``[C, ...]``
  arrays, so evaluation of one model can fill whole batches across clients.

  Args:
    kind: "images" or "text".
    x: images uint8 [C, N, H, W, ch]; text uint8 [C, L].
    y: images int [C, N]; text: unused.
    client, idx: int32 [B] client ids and example indices.
    seq_len: text window length.

  Raises:
    ValueError: for an unknown ``kind``.
  """
  # Flattening the client axis makes slot idx of client c slot c * N + idx of one big client
  # (text windows of valid starts never cross into the next client's text).
  x = jnp.asarray(x)
  slots = x.shape[1]
  flat_idx = jnp.asarray(client, jnp.int32) * slots + jnp.asarray(idx, jnp.int32)
  flat_y = jnp.asarray(y).reshape(-1)
  return example_batch(kind, x.reshape(-1, *x.shape[2:]), flat_y, flat_idx, seq_len=seq_len)
