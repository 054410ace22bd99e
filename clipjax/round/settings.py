"""What a round needs that does not change across rounds, in typed pieces.

`RoundSetting` is built once per run by `clipjax.round.build.build_round` (from the validated
spec, the loaded data and the model) and read by every stage of
`clipjax.round.algorithm.make_round`. Each sub-setting groups what one stage reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from clipjax import methods, multihost
from clipjax.clip import keep as keep_lib
from clipjax.clock import charges as charges_lib
from clipjax.clock import devices
from clipjax.fl import aggregation
from clipjax.models import units


@dataclasses.dataclass(frozen=True)
class KeepSetting:
  """The straggler decision (DESIGN 2.2-2.3)."""

  straggler_fraction: float
  table: keep_lib.FlopTable
  rho_min: float | None
  fixed: float | None = None  # `clip.fixed_keep`: every straggler keeps this p


@dataclasses.dataclass(frozen=True)
class ReportSetting:
  """Time reports beyond the paper (`clipjax.clip.reports`): who lies, by how much, and the
  decision rule. The default is DESIGN 2.2: nobody lies, the plain quantile."""

  liars: np.ndarray | None = None       # bool[K] population clients that lie
  factor: float = 1.0                   # their reported times = true x factor
  rule: str = "quantile"                # `reports.REPORT_RULES`
  tiers: devices.Tiers | None = None    # public device tiers (plausible rule)
  max_examples: float = 0.0             # public bound on a client's examples (plausible rule)
  jitter_sigma: float = 0.0
  sigmas: float = 4.0
  histogram: np.ndarray | None = None   # bin edges: clients read the summed time histograms
                                        # (`clip.straggler_info=histogram`, broadcasting
                                        # methods); None: reports
  in_share_keys: bool = False           # the reports ride inside SecAgg's ShareKeys
                                        # ciphertexts (`clip.broadcast=share_keys`): report
                                        # bytes, no message of their own


@dataclasses.dataclass(frozen=True)
class KeyAgreementSetting:
  """Each round's pairwise key agreement (it serves SecAgg and the sealed time broadcast).

  Attributes:
    kwargs: `secagg.setup_round` arguments: protocol, degree, threshold, threat, allow_weak.
    dropout_rate: injected drop-outs (SecAgg runs only).
    simulate: `secagg.SIMULATE`: run the protocol, or compute its exact result (`sum`).
    verify_every: every this many rounds the protocol and `sum` both run and must agree bit for
      bit (`secagg.SimulationMismatch` stops the run otherwise); 0: never.
    graph_randomness: where the SecAgg+ graph's labels come from (`secagg.setup_round`).
  """

  kwargs: dict
  dropout_rate: float
  simulate: str = "protocol"
  verify_every: int = 0
  graph_randomness: str = "committed"

  def simulate_mode(self, round_index: int) -> str:
    """`setup_round`'s `simulate` for the 0-based round: `verify` on every
    `verify_every`-th round (rounds verify_every, 2 verify_every, ... counted from 1)."""
    if self.verify_every and (round_index + 1) % self.verify_every == 0:
      return "verify"
    return self.simulate

  @property
  def min_clients(self) -> int:
    """Key agreement needs 2 clients, and an explicit t or k as many as they say."""
    return max(2, self.kwargs.get("threshold") or 0, (self.kwargs.get("degree") or 0) + 1)


@dataclasses.dataclass(frozen=True)
class ClientData:
  """The population's training data on the host, [K, ...]; each chunk's rows are gathered and
  put on the device(s) per round.

  Attributes:
    x, y, valid: examples, labels and the padding flags.
    weights: f32[K] training examples per client (the FedAvg weights).
  """

  x: np.ndarray
  y: np.ndarray
  valid: np.ndarray
  weights: np.ndarray

  @property
  def population(self) -> int:
    return len(self.weights)


@dataclasses.dataclass(frozen=True)
class ServerSetting:
  """The server's optimiser and its own seconds per round.

  Attributes:
    init: `params -> ServerState`.
    step: jitted `(ServerState, mean_delta) -> ServerState`.
    seconds: the server's fixed seconds per round, added to every round's time.
    ops_per_s: the rate its work runs at (`clipjax.clock.server`); 0: no work charged.
  """

  init: Callable
  step: Callable
  seconds: float = 0.0
  ops_per_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class FluidServer:
  """FLuID's server side (`clipjax.fluid.make_server`).

  Attributes:
    init: `() -> FluidState`.
    update: `(state, params, deltas, voters, keep, key) -> (state, metrics dict)`.
  """

  init: Callable
  update: Callable


@dataclasses.dataclass(frozen=True)
class ScaleSetting:
  """How a cohort is laid out on the hardware (DESIGN 2.9); results do not depend on it.

  Attributes:
    cohort: clients per round C (None: the whole population).
    chunk: clients trained and summed at once (0: the whole cohort).
    mesh: a `jax.sharding.Mesh` with axis "clients" to shard each chunk over, or None.
    processes: this process's place among several (`clipjax.multihost`).
  """

  cohort: int | None = None
  chunk: int = 0
  mesh: Any = None
  processes: multihost.Processes = multihost.SINGLE


@dataclasses.dataclass(frozen=True)
class RoundSetting:
  """Everything a round needs that does not change across rounds.

  Attributes:
    method: the method's `methods.Method`.
    unit_spec: the model's prunable units.
    pruned_round: from `methods.make_pruned_round`.
    aggregator: from `aggregation.make_aggregator`; `aggregation_rule` is its rule name.
    secagg_on: SecAgg sums the updates.
    server: the server optimiser and seconds.
    clock: the virtual clock's `ClockModel`.
    keep: the straggler decision.
    key_agreement: the pairwise keys, or None when no step of the method needs keys.
    data: the population's training data.
    base_key: typed PRNG key of the run; seed: its integer seed.
    fluid: FLuID's server side, None for the other methods.
    scorer: `methods.make_scorer`: `(params, reference) -> scores` (CLIP only).
    scale: cohort size, chunks, devices and processes.
    reports: lying clients and the straggler decision rule.
    reference: what CLIP scores w(t) against (`invariance.REFERENCES`): `last_seen`, the last
      different model the client received; `server`, the server's w(t-1), sent as a second
      download.
    unavailable_rate: each cohort client is away this round with this probability
      (`cohort.away`): it takes no part and misses the round's model.
  """

  method: methods.Method
  unit_spec: units.UnitSpec
  pruned_round: Callable
  aggregator: aggregation.Aggregator
  aggregation_rule: str
  secagg_on: bool
  server: ServerSetting
  clock: charges_lib.ClockModel
  keep: KeepSetting
  key_agreement: KeyAgreementSetting | None
  data: ClientData
  base_key: jax.Array
  seed: int
  fluid: FluidServer | None = None
  scorer: Callable | None = None
  scale: ScaleSetting = ScaleSetting()
  reports: ReportSetting = ReportSetting()
  reference: str = "last_seen"
  unavailable_rate: float = 0.0

  @property
  def scores_needed(self) -> bool:
    """The clients score invariance themselves (CLIP)."""
    return self.method.prune_rule == "client_invariance"

  @property
  def server_reference(self) -> bool:
    """The server sends w(t-1) as a second download for the clients to score against."""
    return self.reference == "server" and self.scores_needed

  @property
  def upload_planes(self) -> bool:
    """`clip.upload=planes`: the SecAgg upload is split into two bit planes (issue 26)."""
    secure = self.aggregator.secure
    return secure is not None and secure.high_bits > 0

  @property
  def min_clients(self) -> int:
    """The fewest cohort clients a round can run with."""
    return 1 if self.key_agreement is None else self.key_agreement.min_clients
