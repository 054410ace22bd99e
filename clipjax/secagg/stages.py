"""Host side of the SecAgg stages after AdvertiseKeys: ShareKeys, masking keys, Unmasking.

Each stage is one function of the round's :class:`RoundSetup` and the records of the stages
before it. It returns a frozen record of what the stage decided (who is still in, the ChaCha20
keys the device steps need) with its per-client traffic, adds what the server receives to
``setup.server``, and raises :class:`RoundAborted` when fewer than t clients remain. What a
stage decides from public facts alone (who takes part, the aborts, the traffic) is one function
(:func:`plan_shares`, :func:`collect_masked_inputs`, :func:`plan_unmasking`) that the protocol's
stages call and ``simulate=sum`` (:mod:`clipjax.secagg.fast_sum`) uses without the secrets.
The device work (blinding, the server sum, unblinding) is :mod:`clipjax.secagg.blinding`;
:mod:`clipjax.secagg.stream` runs both in protocol order.

Client sets follow Bonawitz et al.: U1 advertised keys, U2 shared them (``SharedKeys.clients``),
U3 sent a masked input (``MaskedInput.senders``), U4 revealed shares
(``UnmaskingKeys.revealers``).

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Collection, Sequence

import numpy as np

from clipjax.secagg import chacha, graph, host_crypto, shamir
from clipjax.secagg import protocol as protocol_lib
from clipjax.secagg.protocol import RoundAborted, RoundSetup

_SHARE_PLAINTEXT = 8 + 2 * shamir.SHARE_BYTES
_SHARE_CIPHERTEXT = host_crypto.NONCE_BYTES + _SHARE_PLAINTEXT + host_crypto.TAG_BYTES
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Traffic:
  """Bytes each client sent and received in one stage (int64 ``[C]`` each)."""
  sent: np.ndarray
  received: np.ndarray


@dataclasses.dataclass(frozen=True)
class SharedKeys:
  """Outcome of ShareKeys.

  Attributes:
    clients: U2: sorted ids of the clients that shared their secrets.
    too_few_holders: sorted ids dropped here because fewer than t of them share.
    self_seeds: u -> u's 32-byte self-blind seed ``b_u`` (its private state), u in U2.
    own_shares: u -> (u's own share of ``b_u``, of ``s_u^SK``), u in U2.
    traffic: the stage's :class:`Traffic`.
  """
  clients: tuple[int, ...]
  too_few_holders: tuple[int, ...]
  self_seeds: dict[int, bytes]
  own_shares: dict[int, tuple[bytes, bytes]]
  traffic: Traffic


@dataclasses.dataclass(frozen=True)
class MaskedInput:
  """Outcome of MaskedInputCollection at the server: who sent a masked input.

  Attributes:
    senders: U3: sorted ids of the clients that send a masked input; S = len(senders).
    nonfinite: sorted ids in U2 that send nothing because their update is not finite.
    traffic: the stage's :class:`Traffic`.
  """
  senders: tuple[int, ...]
  nonfinite: tuple[int, ...]
  traffic: Traffic


@dataclasses.dataclass(frozen=True)
class BlindingKeys:
  """The seeds that blind the inputs of N rows (clients), some of which may send nothing.

  Attributes:
    self_keys: uint32 ``[N, 8]`` self-blind seeds, one row per client (zeros where it sends
      nothing).
    edge_keys: uint32 ``[E, 8]`` pairwise seeds of the graph edges inside U2 that touch a
      sending row.
    edge_lo, edge_hi: int32 ``[E]`` row of each edge's lower (upper) endpoint, or N where that
      endpoint is not a sending row.
  """
  self_keys: np.ndarray
  edge_keys: np.ndarray
  edge_lo: np.ndarray
  edge_hi: np.ndarray


@dataclasses.dataclass(frozen=True)
class MaskingKeys(MaskedInput):
  """Outcome of MaskedInputCollection on the host: who sends, and the seeds of their blinds.

  Attributes (besides :class:`MaskedInput`'s):
    self_keys: uint32 ``[S, 8]`` self-blind seeds, one row per sender.
    edge_keys: uint32 ``[E, 8]`` pairwise seeds of the graph edges inside U2 that touch a
      sender.
    edge_lo, edge_hi: int32 ``[E]`` sender row of each edge's lower (upper) endpoint, or S
      where that endpoint sends nothing.
  """
  self_keys: np.ndarray
  edge_keys: np.ndarray
  edge_lo: np.ndarray
  edge_hi: np.ndarray


@dataclasses.dataclass(frozen=True)
class UnmaskingKeys:
  """Outcome of Unmasking on the host: the reconstructed seeds that remove the blinds.

  Attributes:
    revealers: U4: sorted ids of the senders that revealed their shares.
    self_keys: uint32 ``[S, 8]`` reconstructed self-blind seeds of the senders (their order).
    edge_keys: uint32 ``[F, 8]`` reconstructed pairwise seeds of the edges (dropped client in
      U2 minus U3, sender).
    edge_negated: bool ``[F]``: the sender subtracted that stream (it is the upper endpoint).
    traffic: the stage's :class:`Traffic`.
  """
  revealers: tuple[int, ...]
  self_keys: np.ndarray
  edge_keys: np.ndarray
  edge_negated: np.ndarray
  traffic: Traffic


@dataclasses.dataclass(frozen=True)
class UnmaskingPlan:
  """Unmasking's public decisions (:func:`plan_unmasking`).

  Attributes:
    revealers: U4: sorted ids of the senders that reveal their shares.
    revealed_by: u in U2 -> the revealers that hold a share of u's secret (u itself first).
    traffic: the stage's :class:`Traffic`.
  """
  revealers: tuple[int, ...]
  revealed_by: dict[int, tuple[int, ...]]
  traffic: Traffic


def _zeros(setup: RoundSetup) -> np.ndarray:
  return np.zeros(setup.num_clients, np.int64)


def _key_rows(keys: Sequence[bytes]) -> np.ndarray:
  """32-byte keys -> uint32 ``[len(keys), 8]`` ChaCha20 key words (``[0, 8]`` if none)."""
  return np.stack([chacha.key_words(k) for k in keys]) if keys else np.zeros((0, 8), np.uint32)


def aborted(setup: RoundSetup, message: str, stage: str, participants: Collection[int],
            nonfinite: Sequence[int] = (), too_few_holders: Sequence[int] = ()) -> RoundAborted:
  """The :class:`RoundAborted` of ``setup``'s round failing at ``stage``."""
  return RoundAborted(f"round {setup.round_index} aborted at {stage}: {message}", stage,
                      participants, nonfinite=nonfinite, too_few_holders=too_few_holders)


def advertise_keys_traffic(setup: RoundSetup) -> Traffic:
  """Traffic of AdvertiseKeys, which :func:`clipjax.secagg.setup_round` ran."""
  sent, received = _zeros(setup), _zeros(setup)
  up, per_neighbour = setup.advertise_bytes
  nonces = len(setup.server.graph_nonces) * graph.GRAPH_NONCE_BYTES
  for u in setup.advertised:
    sent[u] = up
    received[u] = per_neighbour * len(setup.neighbours(u)) + nonces
  return Traffic(sent, received)


def sharers(setup: RoundSetup, candidates: Collection[int]) -> frozenset[int]:
  """The candidates that can share: each has at least t holders (itself included) among them.

  A client with fewer holders cannot have its secrets rebuilt, so it drops, and in turn so does
  any client left short by that. The server decides this from public facts: the graph and who
  sent shares.
  """
  kept = set(candidates)
  while True:
    short = {u for u in kept if 1 + sum(v in kept for v in setup.neighbours(u)) < setup.threshold}
    if not short:
      return frozenset(kept)
    kept -= short


def holders(setup: RoundSetup, clients: Collection[int], u: int) -> tuple[int, ...]:
  """u's share holders among ``clients`` (U2): u itself, then its neighbours in U2."""
  return (u,) + tuple(v for v in setup.neighbours(u) if v in clients)


def plan_shares(setup: RoundSetup) -> SharedKeys:
  """ShareKeys' public decisions: who shares (U2), who lacked holders, and the stage's traffic.

  The record holds no secrets (``self_seeds`` and ``own_shares`` empty): :func:`share_keys`
  draws them; ``simulate="sum"`` (:mod:`clipjax.secagg.fast_sum`) needs none.

  Raises:
    RoundAborted: if fewer than t clients can share; every candidate (it trained and sent
      shares) is a participant.
  """
  t = setup.threshold
  candidates = set(setup.advertised) - setup.dropouts["share_keys"]
  kept = sharers(setup, candidates)
  clients = tuple(sorted(kept))
  too_few = tuple(sorted(candidates - kept))
  if len(clients) < t:
    raise aborted(setup, f"{len(clients)} clients survive ({len(too_few)} more lacked t share "
                  f"holders), fewer than threshold t={t}", "share_keys", candidates,
                  too_few_holders=too_few)
  sent, received = _zeros(setup), _zeros(setup)
  for u in clients:
    for v in holders(setup, kept, u)[1:]:
      sent[u] += _SHARE_CIPHERTEXT
      received[v] += _SHARE_CIPHERTEXT
  return SharedKeys(clients, too_few, {}, {}, Traffic(sent, received))


def share_keys(setup: RoundSetup) -> SharedKeys:
  """ShareKeys: each sharer u draws ``b_u`` and sends holders {u} + N(u) shares of it and s_u^SK.

  The shares for each neighbour v are sealed with the (u, v) share-encryption key and stored in
  ``setup.server.share_ciphertexts``. Who shares and the traffic are :func:`plan_shares`'.

  Raises:
    RoundAborted: if fewer than t clients can share; every candidate (it trained and sent
      shares) is a participant.
  """
  t, rand = setup.threshold, setup.rng
  plan = plan_shares(setup)
  kept = frozenset(plan.clients)
  self_seeds, own_shares = {}, {}
  for u in plan.clients:
    held_by = holders(setup, kept, u)
    self_seeds[u] = rand.bytes(32)
    sb = shamir.split(self_seeds[u], t, held_by, rand)
    ss = shamir.split(setup.mask_private(u), t, held_by, rand)
    own_shares[u] = (sb[u], ss[u])
    for v in held_by[1:]:
      plain = struct.pack("<II", u, v) + sb[v] + ss[v]
      aad = host_crypto.associated_data(u, v, setup.round_index, host_crypto.INFO_SHARES)
      key = setup.peer_key(u, v, host_crypto.INFO_SHARES)
      setup.server.share_ciphertexts[(u, v)] = host_crypto.seal(key, plain, aad, rand)
  return dataclasses.replace(plan, self_seeds=self_seeds, own_shares=own_shares)


def expected_senders(setup: RoundSetup, shared: SharedKeys) -> tuple[int, ...]:
  """The clients of U2 that reach MaskedInputCollection: each sends if its update is finite."""
  dropped = setup.dropouts["masked_input"]
  return tuple(u for u in shared.clients if u not in dropped)


def inner_edges(setup: RoundSetup, shared: SharedKeys) -> np.ndarray:
  """int32 ``[E, 2]`` graph edges (lo < hi) with both endpoints in U2: the pairwise blinds."""
  inside = np.zeros(setup.num_clients, bool)
  inside[list(shared.clients)] = True
  edges = np.asarray(setup.edges, np.int32).reshape(-1, 2)
  return edges[inside[edges[:, 0]] & inside[edges[:, 1]]]


def blinding_keys(setup: RoundSetup, shared: SharedKeys, ids: np.ndarray, sends: np.ndarray,
                  edges: np.ndarray) -> BlindingKeys:
  """The seeds that blind the inputs of the clients ``ids`` where ``sends``.

  A client's message depends only on its own seeds and its edges inside U2, not on whether its
  neighbours send, so the keys of any group of clients can be computed on their own.

  Args:
    setup: the round.
    shared: the ShareKeys record.
    ids: int ``[N]`` distinct client ids, one per row.
    sends: bool ``[N]``: the row blinds an input (its client is in U2); other rows get no keys.
    edges: int ``[E, 2]`` the graph edges inside U2 (:func:`inner_edges`).

  Returns:
    :class:`BlindingKeys` for the N rows and the edges that touch a sending row.
  """
  ids = np.asarray(ids, np.int64)
  sends = np.asarray(sends, bool)
  num = len(ids)
  row = np.full(setup.num_clients, num, np.int32)
  row[ids[sends]] = np.flatnonzero(sends)
  rows = row[edges].reshape(-1, 2)
  touch = (rows < num).any(axis=1)
  self_keys = np.zeros((num, 8), np.uint32)
  self_keys[sends] = _key_rows([shared.self_seeds[u] for u in ids[sends].tolist()])
  return BlindingKeys(
      self_keys=self_keys,
      edge_keys=_key_rows([setup.mask_seed(a, b) for a, b in edges[touch].tolist()]),
      edge_lo=rows[touch, 0].copy(), edge_hi=rows[touch, 1].copy())


def collect_masked_inputs(setup: RoundSetup, shared: SharedKeys, senders: Sequence[int],
                          nonfinite: Sequence[int], message_words: int) -> MaskedInput:
  """MaskedInputCollection at the server: records who sent; logs the non-finite clients.

  Args:
    setup: the round.
    shared: the ShareKeys record.
    senders: ids of the clients whose masked input arrived.
    nonfinite: ids in U2 that sent nothing because their update is not finite.
    message_words: uint32 words of one masked input (D + 1).

  Raises:
    RoundAborted: if fewer than t clients send; the senders and the non-finite clients (they
      trained as well) are the participants.
  """
  senders, nonfinite = tuple(sorted(senders)), tuple(sorted(nonfinite))
  if nonfinite:
    _log.warning("round %d: clients %s have non-finite updates (NaN or Inf); they are left out "
                 "of the sum as drop-outs", setup.round_index, list(nonfinite))
  if len(senders) < setup.threshold:
    raise aborted(setup, f"{len(senders)} clients survive, fewer than threshold "
                  f"t={setup.threshold}", "masked_input", senders + nonfinite,
                  nonfinite=nonfinite, too_few_holders=shared.too_few_holders)
  sent = _zeros(setup)
  sent[list(senders)] = 4 * message_words
  return MaskedInput(senders, nonfinite, Traffic(sent, _zeros(setup)))


def masking_keys(setup: RoundSetup, shared: SharedKeys, finite: np.ndarray,
                 message_words: int) -> MaskingKeys:
  """MaskedInputCollection on the host: the senders and the seeds of their blinds.

  A client whose update is not finite sends nothing (a drop-out), and is logged.

  Args:
    setup: the round.
    shared: the ShareKeys record.
    finite: bool ``[C]``: client u's update is finite.
    message_words: uint32 words of one masked input (D + 1).

  Raises:
    RoundAborted: if fewer than t clients send; the senders and the non-finite clients (they
      trained as well) are the participants.
  """
  ready = expected_senders(setup, shared)
  masked = collect_masked_inputs(setup, shared, [u for u in ready if finite[u]],
                                 [u for u in ready if not finite[u]], message_words)
  ids = np.array(masked.senders, np.int64)
  keys = blinding_keys(setup, shared, ids, np.ones(len(ids), bool), inner_edges(setup, shared))
  return MaskingKeys(senders=masked.senders, nonfinite=masked.nonfinite, traffic=masked.traffic,
                     self_keys=keys.self_keys, edge_keys=keys.edge_keys, edge_lo=keys.edge_lo,
                     edge_hi=keys.edge_hi)


def _reveal(setup: RoundSetup, shared: SharedKeys, senders: frozenset[int], holder: int,
            owner: int) -> bytes:
  """The share ``holder`` reveals of ``owner``'s secret: of b_u for a sender, else of s_u^SK."""
  if owner == holder:
    return shared.own_shares[owner][0]  # a revealer is a sender: its own b-share
  aad = host_crypto.associated_data(owner, holder, setup.round_index, host_crypto.INFO_SHARES)
  plain = host_crypto.open_sealed(setup.peer_key(holder, owner, host_crypto.INFO_SHARES),
                                  setup.server.share_ciphertexts[(owner, holder)], aad)
  sb, ss = plain[8:8 + shamir.SHARE_BYTES], plain[8 + shamir.SHARE_BYTES:]
  return sb if owner in senders else ss


def plan_unmasking(setup: RoundSetup, shared: SharedKeys,
                   masking: MaskedInput) -> UnmaskingPlan:
  """Unmasking's public decisions: who reveals (U4), which shares each secret gets, traffic.

  Each revealer v receives the list of senders and reveals, for every u in U2 it holds a share
  of, its share of b_u (u sent) or of s_u^SK (u did not).

  Raises:
    RoundAborted: if fewer than t senders reveal, or a secret has fewer than t revealed shares;
      the senders are the participants.
  """
  t = setup.threshold
  left_out = {"nonfinite": masking.nonfinite, "too_few_holders": shared.too_few_holders}
  revealers = tuple(v for v in masking.senders if v not in setup.dropouts["unmasking"])
  if len(revealers) < t:
    raise aborted(setup, f"{len(revealers)} clients survive, fewer than threshold t={t}",
                  "unmasking", masking.senders, **left_out)
  sent, received = _zeros(setup), _zeros(setup)
  received[list(revealers)] += 4 * len(masking.senders)
  kept, revealing = frozenset(shared.clients), frozenset(revealers)
  revealed_by = {}
  for u in shared.clients:
    revealed_by[u] = tuple(v for v in holders(setup, kept, u) if v in revealing)
    sent[list(revealed_by[u])] += 4 + shamir.SHARE_BYTES
  for u in shared.clients:
    if len(revealed_by[u]) < t:
      raise aborted(setup, f"client {u}'s secret has {len(revealed_by[u])} shares from "
                    f"surviving holders, fewer than threshold t={t}", "unmasking",
                    masking.senders, **left_out)
  return UnmaskingPlan(revealers, revealed_by, Traffic(sent, received))


def unmasking_keys(setup: RoundSetup, shared: SharedKeys,
                   masking: MaskedInput) -> UnmaskingKeys:
  """Unmasking on the host: survivors reveal b-shares of U3 and s^SK-shares of U2 minus U3.

  Who reveals what is :func:`plan_unmasking`'s. The revealed shares are stored in
  ``setup.server.revealed_shares``; the server rebuilds every secret and checks each rebuilt
  masking key against the public key it was advertised with.

  Raises:
    RoundAborted: if fewer than t senders reveal, a secret has fewer than t revealed shares, or
      a rebuilt masking key does not match; the senders are the participants.
  """
  t, srv = setup.threshold, setup.server
  plan = plan_unmasking(setup, shared, masking)
  senders = frozenset(masking.senders)
  recovered = {}
  for u, revealed_by in plan.revealed_by.items():
    kind = "self_seed" if u in senders else "mask_key"
    revealed = {v: _reveal(setup, shared, senders, v, u) for v in revealed_by}
    srv.revealed_shares.update({(v, u, kind): share for v, share in revealed.items()})
    recovered[u] = shamir.combine(revealed, t)
  fix_keys, negated = [], []
  for u in shared.clients:
    if u in senders:
      continue
    if host_crypto.x25519_public(recovered[u]) != srv.public_keys[u][1]:
      raise aborted(setup, f"the reconstructed masking key of client {u} does not match its "
                    "public key", "unmasking", masking.senders, nonfinite=masking.nonfinite,
                    too_few_holders=shared.too_few_holders)
    for v in setup.neighbours(u):
      if v in senders:
        fix_keys.append(host_crypto.agree(recovered[u], srv.public_keys[v][1],
                                          host_crypto.INFO_MASK))
        negated.append(v > u)
  return UnmaskingKeys(
      revealers=plan.revealers, self_keys=_key_rows([recovered[u] for u in masking.senders]),
      edge_keys=_key_rows(fix_keys), edge_negated=np.array(negated, bool),
      traffic=plan.traffic)
