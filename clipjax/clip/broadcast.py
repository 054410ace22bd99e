"""Host side: the encrypted straggler time broadcast, relayed by the server (DESIGN 2.2).

From round 2 on, every client seals its last-round report (fit time normalised to the full
model, non-prunable network time) for each graph neighbour with AES-GCM under the key of
their SecAgg pairwise agreement. The server only relays ciphertexts (`Relay.transcript`);
each client opens what it received and decides alone whether it is a straggler, from its
own times and its neighbours' (all peers under SecAgg, its k graph neighbours under
SecAgg+). Decisions are computed with the jittable `straggler_decision`, vmapped.

Under `secagg.simulate=sum` the broadcast, like the secure sum (`clipjax.secagg.fast_sum`),
skips the cryptography whose outcome is known: every receiver gets exactly what opening its
ciphertext gives (the sender's encoded and decoded report), along the same routes
(`report_routes`, the one answer to who hears whom in every mode), and each message counts the
bytes its ciphertext has (`secagg.sealed_size`), so decisions and the clock's charges are
bit-identical to the protocol's. No key pair is drawn, no key agreed, nothing sealed. Verify
rounds do both and stop on the first difference (`secagg.SimulationMismatch`).

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv:2510.16694, 2025, Section 4.1.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import secagg
from clipjax.clip import keep as keep_lib
from clipjax.clip import reports as reports_lib
from clipjax.clip import stragglers


@dataclasses.dataclass(frozen=True)
class Routes:
  """Who hears whom in the broadcast (`report_routes`): the relay's messages in order.

  Message i goes from `sender[i]` to `receiver[i]` and fills column `slot[i]` of the
  receiver's row of `KnownTimes` (its neighbours in ascending order); `width` = K.
  """

  num: int
  sender: np.ndarray    # int[M]
  receiver: np.ndarray  # int[M]
  slot: np.ndarray      # int[M]
  width: int


def report_routes(setup, alive: np.ndarray) -> Routes:
  """Every alive client sends one report to each neighbour (`setup.neighbours`), in the
  order the relay sees them: senders ascending, then receivers ascending.

  The one answer to "who receives what" of every `simulate` mode, so the protocol and `sum`
  cannot deliver to different clients.

  Args:
    setup: this round's `clipjax.secagg.setup_round(...)` result (its graph and who
      advertised keys; no key is read).
    alive: bool[C] clients that send (drop-outs send nothing).
  """
  num = len(alive)
  lists = [setup.neighbours(u) for u in range(num)]
  counts = np.fromiter(map(len, lists), np.int64, count=num)
  owner = np.repeat(np.arange(num, dtype=np.int64), counts)
  peer = np.fromiter(itertools.chain.from_iterable(lists), np.int64, count=int(counts.sum()))
  pairs = np.sort(owner * num + peer)  # (owner, peer) ascending: each row's neighbours sorted
  owner, peer = pairs // num, pairs % num
  start = np.cumsum(counts) - counts
  sends = np.asarray(alive, bool)[owner]
  sender, receiver = owner[sends], peer[sends]
  # The graph is undirected: the sender is in its receiver's list; find where.
  slot = np.searchsorted(pairs, receiver * num + sender) - start[receiver]
  return Routes(num=num, sender=sender, receiver=receiver, slot=slot,
                width=int(counts.max(initial=0)))


@dataclasses.dataclass(frozen=True)
class Relay:
  """What the server relayed: message i (`Routes` order) went from `sender[i]` to
  `receiver[i]` and had `size[i]` bytes.

  `ciphertexts` are the bytes themselves when the protocol sealed them; under
  `secagg.simulate=sum` nothing is sealed (None) and `size` is what sealing gives (a report's
  bytes plus AES-GCM's nonce and tag), so the clock charges the same bytes in every mode.
  """

  sender: np.ndarray
  receiver: np.ndarray
  size: np.ndarray
  ciphertexts: tuple[bytes, ...] | None = None

  @property
  def transcript(self) -> list[tuple[int, int, bytes]]:
    """(sender, receiver, ciphertext) triples, as the server holds them.

    Raises:
      ValueError: under `simulate=sum`, which seals nothing.
    """
    if self.ciphertexts is None:
      raise ValueError("simulate='sum' relays no ciphertext (only their sizes); run the "
                       "protocol to get the transcript")
    return list(zip(self.sender.tolist(), self.receiver.tolist(), self.ciphertexts))

  @property
  def bytes_relayed(self) -> int:
    return int(self.size.sum())

  def bytes_per_client(self, num: int) -> tuple[np.ndarray, np.ndarray]:
    """(sent, received) ciphertext bytes of each of `num` clients, f64[num]."""
    weights = self.size.astype(np.float64)
    return (np.bincount(self.sender, weights, minlength=num),
            np.bincount(self.receiver, weights, minlength=num))


@dataclasses.dataclass(frozen=True)
class KnownTimes:
  """What each client learned from its peers: `[C, K]` arrays, K = max neighbours."""

  fit: np.ndarray
  net: np.ndarray
  valid: np.ndarray


def _deliver(routes: Routes, fit_heard: np.ndarray, net_heard: np.ndarray) -> KnownTimes:
  """Each message's times, put where its receiver keeps them."""
  shape = (routes.num, routes.width)
  known = KnownTimes(fit=np.zeros(shape), net=np.zeros(shape), valid=np.zeros(shape, bool))
  at = (routes.receiver, routes.slot)
  known.fit[at], known.net[at], known.valid[at] = fit_heard, net_heard, True
  return known


def _sealed(setup, routes: Routes, reports: dict[int, bytes]) -> tuple[KnownTimes, Relay]:
  """The protocol: each report sealed for each receiver (AES-GCM under their pairwise key),
  relayed, opened and decoded by the receiver."""
  sender, receiver = routes.sender.tolist(), routes.receiver.tolist()
  sealed = tuple(secagg.seal_for_peer(setup, u, v, reports[u]) for u, v in zip(sender, receiver))
  opened = [stragglers.decode_time_report(secagg.open_from_peer(setup, v, u, c))
            for u, v, c in zip(sender, receiver, sealed)]
  heard = np.asarray(opened, np.float64).reshape(len(opened), 2)
  relay = Relay(routes.sender, routes.receiver,
                np.fromiter(map(len, sealed), np.int64, count=len(sealed)), sealed)
  return _deliver(routes, heard[:, 0], heard[:, 1]), relay


def _plain(routes: Routes, reports: dict[int, bytes]) -> tuple[KnownTimes, Relay]:
  """`simulate=sum`: each receiver gets what opening the sealed report gives, the sender's
  decoded report, without sealing it; each message counts the bytes its ciphertext has."""
  heard = np.zeros((routes.num, 2))
  for u, report in reports.items():
    heard[u] = stragglers.decode_time_report(report)
  size = np.full(len(routes.sender), secagg.sealed_size(stragglers.TIME_REPORT_BYTES), np.int64)
  return (_deliver(routes, heard[routes.sender, 0], heard[routes.sender, 1]),
          Relay(routes.sender, routes.receiver, size))


def _fields(known: KnownTimes, relay: Relay) -> list[tuple[str, Any]]:
  """What verify compares, in order."""
  return [("time reports fit", known.fit), ("time reports net", known.net),
          ("time reports valid", known.valid), ("time report senders", relay.sender),
          ("time report receivers", relay.receiver), ("time report bytes", relay.size)]


def exchange_time_reports(setup, fit_full: np.ndarray, net: np.ndarray,
                          alive: np.ndarray | None = None) -> tuple[KnownTimes, Relay]:
  """Every alive client sends its sealed report to each neighbour through the server.

  `setup.simulate` says how: `protocol` seals and opens every report; `sum` hands each
  receiver the same values without the cryptography (no key agreement, no AES-GCM);
  `verify` does both and checks them bit for bit. Both deliver along `report_routes`.

  Args:
    setup: this round's `clipjax.secagg.setup_round(...)` result (keys and graph).
    fit_full: f64[C] last-round fit times of each client at full width, seconds.
    net: f64[C] last-round non-prunable times, seconds.
    alive: bool[C] clients that send (drop-outs send nothing); default all.

  Returns:
    The times each client could open, and what the server relayed.

  Raises:
    ValueError: for a time that is negative or not finite (`encode_time_report`).
    secagg.SimulationMismatch: under `verify`, if `sum` delivered otherwise.
  """
  num = len(fit_full)
  alive = np.ones(num, bool) if alive is None else np.asarray(alive, bool)
  routes = report_routes(setup, alive)
  reports = {u: stragglers.encode_time_report(float(fit_full[u]), float(net[u]))
             for u in np.flatnonzero(alive).tolist()}
  if setup.simulate == "sum":
    return _plain(routes, reports)
  known, relay = _sealed(setup, routes, reports)
  if setup.simulate == "verify":
    twin = _plain(report_routes(setup.sum_twin(), alive), reports)
    secagg.check_same_fields(setup.round_index, _fields(known, relay), _fields(*twin))
  return known, relay


def decide_keep_fractions(known: KnownTimes, own_fit: np.ndarray, own_net: np.ndarray, *,
                          straggler_fraction: float, rule: str, table: keep_lib.FlopTable,
                          rho_min: float | None) -> tuple[np.ndarray, np.ndarray]:
  """Each client's own decision and keep fraction, from what it knows (vmapped).

  Args:
    known: the peers' times each client opened.
    own_fit, own_net: f64[C] each client's own last-round times.
    straggler_fraction: f of DESIGN 2.2.
    rule: "clip_compute" or "clip_network" (DESIGN 2.3).
    table: the model's FLOP table (p grid and FLOP fractions).
    rho_min: lower clip of the kept-FLOP fraction (None: the table's smallest p).

  Returns:
    (is_straggler bool[C], keep fraction f32[C]).
  """

  def one(fit, net, kfit, knet, kvalid):
    decision = stragglers.straggler_decision(fit, net, kfit, knet, straggler_fraction,
                                             valid=kvalid)
    p = keep_lib.keep_fraction(decision, fit, net, method=rule, table=table, rho_min=rho_min)
    return decision.is_straggler, p

  is_straggler, p = jax.vmap(one)(
      jnp.asarray(own_fit, jnp.float32), jnp.asarray(own_net, jnp.float32),
      jnp.asarray(known.fit, jnp.float32), jnp.asarray(known.net, jnp.float32),
      jnp.asarray(known.valid))
  return np.asarray(is_straggler), np.asarray(p)


@dataclasses.dataclass(frozen=True)
class Decision:
  """The round's straggler stage, in cohort order.

  Attributes:
    is_straggler: bool[C] clients that called themselves stragglers.
    keep: f32[C] their keep fractions (1 for everybody else).
    broadcasting: the reports were exchanged this round (the clock charges them: a message of
      their own, or their bytes inside ShareKeys, `settings.ReportSetting.in_share_keys`).
    relay_bytes: (sent, received) report bytes per client, or (0, 0).
    fields: the record's fields of this stage, in order.
    high_only: bool[C] network stragglers that send only the high bit plane
      (`clip.upload=planes`, `network_stragglers`); None under `padded`.
  """

  is_straggler: np.ndarray
  keep: np.ndarray
  broadcasting: bool = False
  relay_bytes: tuple = (0, 0)
  fields: dict = dataclasses.field(default_factory=dict)
  high_only: np.ndarray | None = None


def network_stragglers(flagged: np.ndarray, fit: np.ndarray, net: np.ndarray, t_star: float,
                       rho_min: float) -> np.ndarray:
  """bool[C]: the flagged stragglers that cannot meet T* by pruning, so they upload less
  (`clip.upload=planes`, issue 26): even at the smallest kept-FLOP fraction their time
  `rho_min x fit + net` exceeds T*. Each decides from its own times and the T* it read."""
  fit, net = np.asarray(fit, np.float64), np.asarray(net, np.float64)
  return np.asarray(flagged, bool) & (rho_min * fit + net > t_star)


def decide_from_stars(flagged: np.ndarray, t_star: float, f_star: float, own_fit: np.ndarray,
                      own_net: np.ndarray, *, rule: str, table: keep_lib.FlopTable,
                      rho_min: float | None) -> tuple[np.ndarray, np.ndarray]:
  """(is_straggler bool[C], keep fraction f32[C]) of clients that all know the same T* and F*
  and flagged themselves (`clip.straggler_info=histogram`: `TimeHistograms.flags`)."""

  def one(flag, fit, net):
    decision = stragglers.StragglerDecision(
        is_straggler=flag, t_star=jnp.float32(t_star), f_star=jnp.float32(f_star))
    return decision.is_straggler, keep_lib.keep_fraction(decision, fit, net, method=rule,
                                                         table=table, rho_min=rho_min)

  is_straggler, p = jax.vmap(one)(jnp.asarray(flagged, bool), jnp.asarray(own_fit, jnp.float32),
                                  jnp.asarray(own_net, jnp.float32))
  return np.asarray(is_straggler), np.asarray(p)


def decide_stragglers(method, *, setup, reported: np.ndarray, fit: np.ndarray, net: np.ndarray,
                      liars: np.ndarray, any_liars: bool, reports, keep,
                      bounds: Callable[[Any], Any], histograms=None,
                      upload_planes: bool = False) -> Decision:
  """Who is a straggler this round and how much it keeps (DESIGN 2.2-2.3), as each client
  decides from what it learns of its peers' last-round times.

  Broadcasting methods learn them through the sealed broadcast (`exchange_time_reports`),
  FLuID's clients report them to the server in the clear. Liars scale their reports
  (`reports.reported`); under the `plausible` rule a report outside the public bounds counts
  as never received. A client with no times of its own (it has not trained yet) keeps all.

  Args:
    method: the round's `methods.Method`.
    setup: this round's key agreement (`secagg.setup_round`), None without one.
    reported: bool[C] cohort clients that have times to report.
    fit, net: f64[C] their last-round full-model fit and non-prunable seconds (0 when none).
    liars: bool[C] cohort clients that lie.
    any_liars: some population client lies (the record then lists the cohort's liars).
    reports: the `settings.ReportSetting` (factor and rule).
    keep: the `settings.KeepSetting`.
    bounds: `relay_bytes -> reports.Bounds`, the public bounds (called by `plausible` only).
    histograms: `clip.straggler_info=histogram`: the `histogram.TimeHistograms` the last
      secure sum delivered (every client reads T* and F* from them; no broadcast); None: the
      sealed reports.
    upload_planes: `clip.upload=planes` (needs `histograms`): each straggler also decides
      whether it is a network straggler (`network_stragglers`) and sends the high plane only.
  """
  num = len(reported)
  if not (method.prunes and reported.any()):
    return Decision(np.zeros(num, bool), np.ones(num, np.float32))
  fields: dict = {}
  said_fit, said_net = reports_lib.reported(fit, net, liars, reports.factor)
  broadcasting, relay_bytes = False, (0, 0)
  if histograms is not None:  # `clip.straggler_info=histogram` (broadcasting methods only)
    known = None
    fields["histogram_clients"] = histograms.clients
  elif method.broadcasts:
    alive = np.isin(np.arange(num), setup.advertised) & reported
    known, relay = exchange_time_reports(setup, said_fit, said_net, alive)
    broadcasting, relay_bytes = True, relay.bytes_per_client(num)
    relayed = relay.bytes_relayed
    if reports.in_share_keys:  # inside ShareKeys' own AEAD ciphertexts: the plaintext only
      sealed = secagg.sealed_size(stragglers.TIME_REPORT_BYTES)
      relay_bytes = tuple(np.asarray(b) // sealed * stragglers.TIME_REPORT_BYTES
                          for b in relay_bytes)
      relayed = relayed // sealed * stragglers.TIME_REPORT_BYTES
    fields["broadcast_bytes"] = relayed
  else:  # the server sees every client's times in the clear (FLuID's clients report them)
    known = every_report_heard(said_fit, said_net, reported)
  if any_liars:
    fields["liars"] = np.flatnonzero(liars).tolist()
  everyone = every_report_heard(said_fit, said_net, reported)
  if reports.rule == "plausible" and known is not None:  # implausible: never received
    public = bounds(relay_bytes)
    allowed = public.allows(known.fit, known.net)
    fields["implausible_reports"] = int(np.sum(known.valid & ~allowed))
    known = dataclasses.replace(known, valid=known.valid & allowed)
    everyone = dataclasses.replace(
        everyone, valid=everyone.valid & public.allows(everyone.fit, everyone.net))

  def decide(heard: KnownTimes | None) -> tuple[np.ndarray, np.ndarray]:
    if heard is None:  # the histograms: T* and F* are everybody's (none if nobody survived)
      t_star, f_star = histograms.stars(keep.straggler_fraction)
      if not np.isfinite(t_star):
        return np.zeros(num, bool), np.ones(num, np.float32)
      flagged, p = decide_from_stars(histograms.flags(fit, net, keep.straggler_fraction),
                                     t_star, f_star, fit, net, rule=method.keep_rule,
                                     table=keep.table, rho_min=keep.rho_min)
    else:
      flagged, p = decide_keep_fractions(
          heard, fit, net, straggler_fraction=keep.straggler_fraction, rule=method.keep_rule,
          table=keep.table, rho_min=keep.rho_min)
    flagged = np.asarray(flagged) & reported  # no own times: no decision
    if keep.fixed is not None:  # `clip.fixed_keep`: every straggler keeps the same p
      p = np.where(flagged, keep.fixed, 1.0)
    return flagged, np.where(reported, p, 1.0).astype(np.float32)

  is_straggler, p = decide(known)
  fields["stragglers"] = np.flatnonzero(is_straggler).tolist()
  fields["keep_fraction"] = [round(float(x), 4) for x in p]
  high_only = None
  if upload_planes:
    if histograms is None:
      raise ValueError("clip.upload='planes' decides from the summed time histograms: set "
                       "clip.straggler_info='histogram' (or 'auto' under SecAgg)")
    t_star, _ = histograms.stars(keep.straggler_fraction)
    rho_min = float(keep_lib.rho_floor(keep.rho_min, keep.table))
    high_only = (network_stragglers(is_straggler, fit, net, t_star, rho_min)
                 if np.isfinite(t_star) else np.zeros(num, bool))
    fields["high_only"] = np.flatnonzero(high_only).tolist()
  # The same rule with every client's report heard (FLuID's view, a complete graph's): what
  # each client would have decided had it known the global quantile (issue 27's yardstick).
  all_flagged, all_p = decide(everyone) if method.broadcasts else (is_straggler, p)
  fields["stragglers_all_heard"] = np.flatnonzero(all_flagged).tolist()
  fields["pruning_all_heard"] = np.flatnonzero(all_flagged & (all_p < 1.0)).tolist()
  return Decision(is_straggler, p, broadcasting, relay_bytes, fields, high_only)


def every_report_heard(fit: np.ndarray, net: np.ndarray, reported: np.ndarray) -> KnownTimes:
  """Each client knows every other client's reported times (the server's view under FLuID)."""
  num = len(reported)
  return KnownTimes(fit=np.tile(fit, (num, 1)), net=np.tile(net, (num, 1)),
                    valid=~np.eye(num, dtype=bool) & np.asarray(reported, bool)[None, :])
