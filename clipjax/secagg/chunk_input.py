"""MaskedInputCollection of one chunk of clients: its key material, its messages, its sum.

A chunk's masked inputs depend only on its own clients' seeds and their edges inside U2
(:class:`ChunkKeys`), so any group of clients can be encoded, blinded and summed on its own,
in this process or another (:func:`masked_partial`); :class:`clipjax.secagg.SecureSumStream`
hands out the keys and adds the partial sums. Under ``simulate=sum`` the chunk's codes are
summed unblinded; under a bit plane (:mod:`clipjax.secagg.planes`) each masked word travels
modulo its instance's ring.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from clipjax.secagg import blinding, planes, quantize
from clipjax.secagg.aggregate import check_budget, updates_shape
from clipjax.secagg.protocol import RoundSetup


def _sent_encoded(updates: jax.Array, sent: jax.Array, *args, clip: float, bits: int,
                  chunk_words: int, plane: planes.Plane | None = None) -> jax.Array:
  """:func:`blinding.encode_rows` of a padded chunk; rows that send nothing encode zeros."""
  x = jnp.where(sent[:, None], updates.astype(jnp.float32), jnp.zeros((), jnp.float32))
  return blinding.encode_rows(x, *args, clip=clip, bits=bits, chunk_words=chunk_words,
                              plane=plane)


# The one encoder of every simulate mode: both call this jitted function with the same chunk
# shapes, so they run one executable and their codes agree bit for bit.
encoded_rows = jax.jit(_sent_encoded, static_argnames=("clip", "bits", "chunk_words", "plane"))
to_ring = jax.jit(planes.to_ring, static_argnames=("ring", "dim"))
add_blinds = jax.jit(blinding.add_blinds, static_argnames=("chunk_words",), donate_argnums=0)
_finite_rows = jax.jit(lambda x: jnp.all(jnp.isfinite(x), axis=1))
_server_sum = jax.jit(blinding.server_sum)
@dataclasses.dataclass(frozen=True)
class ChunkKeys:
  """The key material one chunk of clients needs to blind its inputs.

  Plain numpy arrays, so another process can receive them: made by
  :meth:`SecureSumStream.client_keys`, used by :func:`masked_partial`.

  Under ``simulate=sum`` (``blinded`` False) there is nothing to blind with: ``self_keys`` are
  zeros and there are no edges.

  Attributes:
    ids: int64 ``[N]`` the chunk's client ids: row i of its updates is client ``ids[i]``.
    sends: bool ``[N]``: the client is in U2 and did not drop before MaskedInputCollection; the
      other rows get no keys and send nothing.
    weight_codes: uint32 ``[N]`` public weight codes r.
    noise_keys: uint32 ``[N, 8]`` stochastic-rounding keys (zeros where the row sends nothing).
    self_keys: uint32 ``[N, 8]`` self-blind seeds ``b_u`` (zeros where the row sends nothing).
    edge_keys: uint32 ``[E, 8]`` pairwise seeds ``s_uv`` of the graph edges inside U2 that touch
      a sending row, then dummy edges (zero keys, both rows N) up to a count fixed by N and the
      public graph, so chunks of one length share one compiled shape.
    edge_lo, edge_hi: int32 ``[E]`` row of each edge's lower (upper) endpoint, or N where that
      endpoint is not a sending row of this chunk.
    blinded: the rows blind their codes (False under ``simulate=sum``: they send them as they
      are, and the partial sum is already unmasked).
    plane: the bit plane the stream sums (:mod:`clipjax.secagg.planes`), None: whole codes.
  """
  ids: np.ndarray
  sends: np.ndarray
  weight_codes: np.ndarray
  noise_keys: np.ndarray
  self_keys: np.ndarray
  edge_keys: np.ndarray
  edge_lo: np.ndarray
  edge_hi: np.ndarray
  blinded: bool = True
  plane: planes.Plane | None = None


def edge_bound(setup: RoundSetup, rows: int) -> int:
  """The most graph edges that N = ``rows`` clients can touch; a chunk's edges are padded to it.

  It depends only on public parameters (C, k, the graph), so every chunk of N ids, in every
  round of the same C and k, has one shape and compiles once. The dummy edges cost keystream
  work where clients dropped out (about twice the drop-out fraction) or where the chunk's
  clients are each other's neighbours.
  """
  c, k, total = setup.num_clients, setup.degree, len(setup.edges)
  bound = min(rows * k, total)  # each edge touching the rows is one of their k per row
  if k == c - 1:  # complete graph: the edges among the other C - N clients never touch them
    bound = min(bound, total - (c - rows) * (c - rows - 1) // 2)
  return bound


def chunk_messages(keys: ChunkKeys, updates: jax.Array, *, clip: float, bits: int,
                    budget_words: int) -> tuple[jax.Array | None, np.ndarray, np.ndarray]:
  """MaskedInputCollection of one chunk on the device.

  Returns:
    (uint32 ``[N, D + 1]`` masked messages (the codes themselves when ``keys.blinded`` is
    False), or None if no row sends; bool ``[N]`` rows that send; bool ``[N]`` rows that would
    send but whose update is not finite). Rows that send nothing hold junk and must never be
    summed.
  """
  num, dim = updates.shape
  if not keys.sends.any():
    return None, np.zeros(num, bool), np.zeros(num, bool)
  finite = np.asarray(_finite_rows(updates))
  sent, nonfinite = keys.sends & finite, keys.sends & ~finite
  if not sent.any():
    return None, sent, nonfinite
  scale_hi, scale_lo = quantize.scale_pair(keys.weight_codes, clip)
  messages = encoded_rows(
      updates, jnp.asarray(sent), jnp.asarray(scale_hi), jnp.asarray(scale_lo),
      jnp.asarray(keys.weight_codes), jnp.asarray(keys.noise_keys), clip=clip, bits=bits,
      chunk_words=blinding.chunk_words_for(num, dim + 1, budget_words),
      plane=None if keys.plane is None else keys.plane.encoder_key)
  if keys.blinded:
    messages = add_blinds(
        messages, jnp.asarray(keys.self_keys), jnp.asarray(keys.edge_keys),
        jnp.asarray(keys.edge_lo), jnp.asarray(keys.edge_hi),
        chunk_words=blinding.chunk_words_for(num + len(keys.edge_keys), dim + 1, budget_words))
  if keys.plane is not None:  # a plane's masked words travel modulo its ring
    messages = to_ring(messages, ring=keys.plane.ring, dim=dim)
  return messages.block_until_ready(), sent, nonfinite


def ids_where(ids: np.ndarray, which: np.ndarray) -> tuple[int, ...]:
  return tuple(sorted(ids[which].tolist()))


def masked_partial(keys: ChunkKeys, updates, *, clip: float, bits: int,
                   budget_words: int = blinding.DEFAULT_BUDGET_WORDS,
                   ) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
  """The sum of one chunk's masked inputs: what the server adds for these clients.

  Pure: it needs only the chunk's keys, so it can run in another process; hand its result to
  :meth:`SecureSumStream.add_partial`. ``clip`` and ``bits`` must be the stream's.

  Args:
    keys: the chunk's :class:`ChunkKeys` (:meth:`SecureSumStream.client_keys`).
    updates: float ``[N, D]`` updates, row i of client ``keys.ids[i]``; rows that are not
      finite send nothing (drop-outs), rows without keys are ignored.
    clip: clipping bound c.
    bits: quantisation bits b.
    budget_words: live keystream words per chunk.

  Returns:
    (uint32 ``[D + 1]`` sum mod 2^32 of the senders' masked inputs, sorted ids of the senders,
    sorted ids whose update was not finite).

  Raises:
    ValueError: on keys that are not a :class:`ChunkKeys`, a bad clip, bits or budget, or
      updates that do not have one row per id.
  """
  if not isinstance(keys, ChunkKeys):
    raise ValueError(f"keys must be the ChunkKeys of SecureSumStream.client_keys(ids), got "
                     f"{type(keys).__name__}")
  clip = quantize.check_clip(clip)
  quantize.check_bits(1, bits)
  check_budget(budget_words)
  num, dim = updates_shape(updates)
  if num != len(keys.ids):
    raise ValueError(f"updates has {num} rows but the keys are for {len(keys.ids)} clients; "
                     "pass one row per id of the keys, in their order")
  messages, sent, nonfinite = chunk_messages(keys, jnp.asarray(updates), clip=clip, bits=bits,
                                              budget_words=budget_words)
  total = (np.zeros(dim + 1, np.uint32) if messages is None
           else np.asarray(_server_sum(messages, jnp.asarray(sent))))
  return total, ids_where(keys.ids, sent), ids_where(keys.ids, nonfinite)
