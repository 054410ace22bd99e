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

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import secagg
from clipjax.clip import keep as keep_lib
from clipjax.clip import stragglers


@dataclasses.dataclass
class Relay:
  """What the server holds after relaying: (sender, receiver, ciphertext) triples only."""

  transcript: list[tuple[int, int, bytes]] = dataclasses.field(default_factory=list)

  @property
  def bytes_relayed(self) -> int:
    return sum(len(c) for _, _, c in self.transcript)


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
