"""Host side: the encrypted straggler time broadcast, relayed by the server (DESIGN 2.2).

From round 2 on, every client seals its last-round report (fit time normalised to the full
model, non-prunable network time) for each graph neighbour with AES-GCM under the key of
their SecAgg pairwise agreement. The server only relays ciphertexts (`Relay.transcript`);
each client opens what it received and decides alone whether it is a straggler, from its
own times and its neighbours' (all peers under SecAgg, its k graph neighbours under
SecAgg+). Decisions are computed with the jittable `straggler_decision`, vmapped.

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv:2510.16694, 2025, Section 4.1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import secagg
from clipjax.clip import keep as keep_lib
from clipjax.clip import reports as reports_lib
from clipjax.clip import stragglers


@dataclasses.dataclass
class Relay:
  """What the server holds after relaying: (sender, receiver, ciphertext) triples only."""

  transcript: list[tuple[int, int, bytes]] = dataclasses.field(default_factory=list)

  @property
  def bytes_relayed(self) -> int:
    return sum(len(c) for _, _, c in self.transcript)

  def bytes_per_client(self, num: int) -> tuple[np.ndarray, np.ndarray]:
    """(sent, received) ciphertext bytes of each of `num` clients."""
    sent, received = np.zeros(num), np.zeros(num)
    for u, v, ciphertext in self.transcript:
      sent[u] += len(ciphertext)
      received[v] += len(ciphertext)
    return sent, received


@dataclasses.dataclass(frozen=True)
class KnownTimes:
  """What each client learned from its peers: `[C, K]` arrays, K = max neighbours."""

  fit: np.ndarray
  net: np.ndarray
  valid: np.ndarray


def exchange_time_reports(setup, fit_full: np.ndarray, net: np.ndarray,
                          alive: np.ndarray | None = None) -> tuple[KnownTimes, Relay]:
  """Every alive client sends its sealed report to each neighbour through the server.

  Args:
    setup: this round's `clipjax.secagg.setup_round(...)` result (keys and graph).
    fit_full: f64[C] last-round fit times of each client at full width, seconds.
    net: f64[C] last-round non-prunable times, seconds.
    alive: bool[C] clients that send (drop-outs send nothing); default all.

  Returns:
    The times each client could open, and the server's relay transcript.
  """
  num = len(fit_full)
  alive = np.ones(num, bool) if alive is None else np.asarray(alive, bool)
  neighbours = [sorted(int(v) for v in setup.neighbours(u)) for u in range(num)]
  width = max((len(n) for n in neighbours), default=0)
  known = KnownTimes(fit=np.zeros((num, width)), net=np.zeros((num, width)),
                     valid=np.zeros((num, width), bool))
  relay = Relay()
  for u in range(num):
    if not alive[u]:
      continue
    report = stragglers.encode_time_report(float(fit_full[u]), float(net[u]))
    for v in neighbours[u]:
      relay.transcript.append((u, v, secagg.seal_for_peer(setup, u, v, report)))
  slot = {(v, u): i for v in range(num) for i, u in enumerate(neighbours[v])}
  for u, v, ciphertext in relay.transcript:
    fit_u, net_u = stragglers.decode_time_report(secagg.open_from_peer(setup, v, u, ciphertext))
    i = slot[(v, u)]
    known.fit[v, i], known.net[v, i], known.valid[v, i] = fit_u, net_u, True
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
    broadcasting: the sealed broadcast ran this round (the clock charges it).
    relay_bytes: (sent, received) ciphertext bytes per client, or (0, 0).
    fields: the record's fields of this stage, in order.
  """

  is_straggler: np.ndarray
  keep: np.ndarray
  broadcasting: bool = False
  relay_bytes: tuple = (0, 0)
  fields: dict = dataclasses.field(default_factory=dict)


def decide_stragglers(method, *, setup, reported: np.ndarray, fit: np.ndarray, net: np.ndarray,
                      liars: np.ndarray, any_liars: bool, reports, keep,
                      bounds: Callable[[Any], Any]) -> Decision:
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
  """
  num = len(reported)
  if not (method.prunes and reported.any()):
    return Decision(np.zeros(num, bool), np.ones(num, np.float32))
  fields: dict = {}
  said_fit, said_net = reports_lib.reported(fit, net, liars, reports.factor)
  broadcasting, relay_bytes = False, (0, 0)
  if method.broadcasts:
    alive = np.isin(np.arange(num), setup.advertised) & reported
    known, relay = exchange_time_reports(setup, said_fit, said_net, alive)
    broadcasting, relay_bytes = True, relay.bytes_per_client(num)
    fields["broadcast_bytes"] = relay.bytes_relayed
  else:  # the server sees every client's times in the clear (FLuID's clients report them)
    known = KnownTimes(fit=np.tile(said_fit, (num, 1)), net=np.tile(said_net, (num, 1)),
                       valid=~np.eye(num, dtype=bool) & reported[None, :])
  if any_liars:
    fields["liars"] = np.flatnonzero(liars).tolist()
  if reports.rule == "plausible":  # implausible reports count as never received
    allowed = bounds(relay_bytes).allows(known.fit, known.net)
    fields["implausible_reports"] = int(np.sum(known.valid & ~allowed))
    known = dataclasses.replace(known, valid=known.valid & allowed)
  is_straggler, p = decide_keep_fractions(
      known, fit, net, straggler_fraction=keep.straggler_fraction, rule=method.keep_rule,
      table=keep.table, rho_min=keep.rho_min)
  is_straggler = np.asarray(is_straggler) & reported  # no own times: no decision
  p = np.where(reported, p, 1.0).astype(np.float32)
  fields["stragglers"] = np.flatnonzero(is_straggler).tolist()
  fields["keep_fraction"] = [round(float(x), 4) for x in p]
  return Decision(is_straggler, p, broadcasting, relay_bytes, fields)
