"""One federated round of any method as an `(init, apply)` algorithm (DESIGN 1, 2.1-2.8).

`make_round(setting)` returns `Algorithm(init, apply)`:

* `init(params) -> RunState`: the whole state of a run between rounds (server state, every
  client's invariance state, FLuID's server-side choice, last round's times, virtual time).
* `apply(state, round_index) -> (RunState, record)`: one round, in the order of the protocol:
  (1) key agreement and the sealed time broadcast (methods that broadcast, from round 2) or
  the times the server sees (`fluid`), and each client's keep fraction; (2) masks and masked
  local training; (3) aggregation by the configured strategy (`clipjax.fl.aggregation`);
  (4) the server optimiser and FLuID's server-side choice for the next round; (5) the virtual
  clock charges each client exactly what it took part in (`clipjax.virtual_clock.charges`).
  `record` is the round's measurements as a JSON-ready dict: the loop in
  `clipjax.experiment` adds evaluation and host seconds, writes it and checkpoints.

An aborted SecAgg round leaves the model unchanged, charges the clock for the work done up to
the abort and returns a record with `aborted` set: `apply` never raises `RoundAborted`.

`apply` is host code (pycryptodome, NumPy) around jitted pieces; it times its own training and
aggregation (`host_seconds_train`, `host_seconds_secagg`) after blocking on the device.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import broadcast, methods, secagg
from clipjax import virtual_clock as clock_lib
from clipjax.clip import devices
from clipjax.clip import keep as keep_lib
from clipjax.fl import aggregation
from clipjax.fl import round as round_lib
from clipjax.fl import server as server_lib

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RunState:
  """Everything a run carries from one round to the next.

  Attributes:
    server: global model w(t), w(t-1), server-optimiser state.
    clip: per-client CLIP invariance state, [C].
    fluid: FLuID's server state (thresholds and the drop order for the next round's
      stragglers, `fluid.FluidState`), None for other methods.
    last_times: last round's per-client times (what clients report), None before round 1.
    virtual_time: seconds on the virtual clock so far.
  """

  server: server_lib.ServerState
  clip: Any
  fluid: Any
  last_times: devices.ClientTimes | None
  virtual_time: float


class Algorithm(NamedTuple):
  init: Callable
  apply: Callable


@dataclasses.dataclass(frozen=True)
class KeepSetting:
  """The straggler decision (DESIGN 2.2-2.3)."""

  straggler_fraction: float
  table: keep_lib.FlopTable
  rho_min: float | None


@dataclasses.dataclass(frozen=True)
class SecAggSetting:
  """Round setup of the pairwise keys (SecAgg and/or the broadcast)."""

  kwargs: dict                # protocol, degree, threshold, threat, allow_weak
  dropout_rate: float         # injected drop-outs (SecAgg runs only)


@dataclasses.dataclass(frozen=True)
class RoundSetting:
  """Everything a round needs that does not change across rounds.

  Attributes:
    method: the method's `methods.Method`.
    unit_spec: the model's prunable units.
    pruned_round: from `methods.make_pruned_round`.
    aggregate: from `aggregation.make_aggregator`.
    aggregation: its rule name.
    secure: SecAgg on.
    server_step: jitted `(ServerState, mean_delta) -> ServerState`.
    server_init: `params -> ServerState`.
    clock: the `ClockModel`.
    keep: the straggler decision.
    keys: pairwise key setup, or None when no method step needs keys.
    x, y, valid: client training data on device, [C, ...].
    weights: f32[C] training examples per client (FedAvg weights).
    base_key: typed key of the run.
    seed: the run's integer seed.
    server_seconds: the server's own seconds per round.
    fluid_init, fluid_update: FLuID's server side (`clipjax.fluid`): `fluid_init() ->
      FluidState` and `fluid_update(state, params, deltas, voters, keep, key) -> (state,
      metrics dict)`; None for the other methods.
  """

  method: methods.Method
  unit_spec: Any
  pruned_round: Callable
  aggregate: Callable
  aggregation: str
  secure: bool
  server_step: Callable
  server_init: Callable
  clock: clock_lib.ClockModel
  keep: KeepSetting
  keys: SecAggSetting | None
  x: jax.Array
  y: jax.Array
  valid: jax.Array
  weights: np.ndarray
  base_key: jax.Array
  seed: int
  server_seconds: float = 0.0
  fluid_init: Callable | None = None
  fluid_update: Callable | None = None


def _broadcast_bytes(relay, num: int) -> tuple[np.ndarray, np.ndarray]:
  sent, received = np.zeros(num), np.zeros(num)
  for u, v, ciphertext in relay.transcript:
    sent[u] += len(ciphertext)
    received[v] += len(ciphertext)
  return sent, received


def make_round(setting: RoundSetting) -> Algorithm:
  """Builds the round of `setting.method` (see the module docstring)."""
  s = setting
  method = s.method
  num = len(s.weights)
  client_ids = jnp.arange(num)
  full_units = {layer.name: np.full(num, layer.size) for layer in s.unit_spec}
  num_params = None  # D: fixed for the run, counted from the first params seen

  def init(params) -> RunState:
    return RunState(server=s.server_init(params),
                    clip=methods.init_clip_state(s.unit_spec, num),
                    fluid=s.fluid_init() if s.fluid_init is not None else None,
                    last_times=None, virtual_time=0.0)

  def charge(kept_units, kept_params, num_params, setup, broadcasting, relay_bytes):
    streams = (np.asarray([1 + len(setup.neighbours(u)) for u in range(num)])
               if (s.secure and setup is not None) else 0)
    sent, received = relay_bytes
    return clock_lib.charges(
        kept_units=kept_units, kept_params=kept_params, num_params=num_params, secure=s.secure,
        upload_vectors=aggregation.upload_vectors(s.aggregation, s.secure), prg_streams=streams,
        broadcast=broadcasting, broadcast_bytes_sent=sent, broadcast_bytes_received=received,
        server_prunes=method.server_prunes)

  def aborted(state, r, err, charged, row):
    times = s.clock.times(r, charged)
    round_s = secagg.aborted_round_seconds(times, err, s.server_seconds)
    row.update({"aborted": str(err), "aborted_stage": err.stage,
                "aborted_participants": list(err.participants), "train_loss": float("nan"),
                "secagg_nonfinite": list(err.nonfinite),
                "secagg_too_few_holders": list(err.too_few_holders),
                "round_time_s": round_s, "virtual_time_s": state.virtual_time + round_s})
    row.update(clock_lib.metrics_fields(times, charged))
    row["survivors"] = [False] * num
    row["server_seconds"] = s.server_seconds
    return row, times, round_s

  def apply(state: RunState, r: int) -> tuple[RunState, dict]:
    row: dict[str, Any] = {"round": r + 1, "stragglers": [], "keep_fraction": [1.0] * num}
    nonlocal num_params
    params = state.server.params
    if num_params is None:
      num_params = int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(params)))
    round_seed = s.seed * 1_000_003 + r
    # (1) keys, then straggler self-identification and keep fractions.
    setup = None
    if s.keys is not None:
      dropouts = secagg.Dropouts(rate=s.keys.dropout_rate) if s.secure else None
      try:
        setup = secagg.setup_round(num, seed=round_seed, round_index=r, dropouts=dropouts,
                                   **s.keys.kwargs)
      except secagg.RoundAborted as e:  # too few keys advertised: the round ends before training
        charged = charge(full_units, np.full(num, num_params), num_params, None, False,
                         (0, 0))
        row, _, round_s = aborted(state, r, e, charged, row)
        return dataclasses.replace(state, virtual_time=state.virtual_time + round_s), row
    is_straggler = np.zeros(num, bool)
    keep = np.ones(num, np.float32)
    broadcasting = False
    relay_bytes = (0, 0)
    if method.prunes and state.last_times is not None:
      last = state.last_times
      if method.broadcasts:
        alive = np.isin(np.arange(num), setup.advertised)
        known, relay = broadcast.exchange_time_reports(setup, last.fit_full, last.report_net,
                                                       alive)
        broadcasting = True
        relay_bytes = _broadcast_bytes(relay, num)
        row["broadcast_bytes"] = relay.bytes_relayed
      else:  # the server sees every client's times in the clear (FLuID's clients report them)
        known = broadcast.KnownTimes(fit=np.tile(last.fit_full, (num, 1)),
                                     net=np.tile(last.report_net, (num, 1)),
                                     valid=~np.eye(num, dtype=bool))
      is_straggler, keep = broadcast.decide_keep_fractions(
          known, last.fit_full, last.report_net,
          straggler_fraction=s.keep.straggler_fraction, rule=method.keep_rule,
          table=s.keep.table, rho_min=s.keep.rho_min)
      row["stragglers"] = np.flatnonzero(is_straggler).tolist()
      row["keep_fraction"] = [round(float(p), 4) for p in keep]
    # (2) masks and local training, blocked on so host seconds are training's own.
    keys = round_lib.client_keys(s.base_key, jnp.int32(r), client_ids)
    tick = time.perf_counter()
    trained = jax.block_until_ready(s.pruned_round(
        params, state.server.prev_params, state.clip,
        state.fluid.choice if state.fluid is not None else None, jnp.asarray(keep),
        keys, s.x, s.y, s.valid))
    row["host_seconds_train"] = time.perf_counter() - tick
    host = jax.device_get({"kept": trained.kept_units, "kept_params": trained.kept_params,
                           "loss": trained.loss_sum, "seen": trained.num_seen,
                           "inv": trained.invariant_units, "slack": trained.slack_units})
    kept = {k: np.asarray(v) for k, v in host["kept"].items()}
    charged = charge(kept, np.asarray(host["kept_params"]), num_params, setup, broadcasting,
                     relay_bytes)
    state = dataclasses.replace(state, clip=trained.clip_state)  # the clients did update it
    # (3) aggregation.
    tick = time.perf_counter()
    try:
      agg = s.aggregate(trained.delta, s.weights, trained.param_prune_mask, setup)
    except secagg.RoundAborted as e:  # too few survivors: the model stays as it is
      row, times, round_s = aborted(state, r, e, charged, row)
      return dataclasses.replace(state, last_times=times,
                                 virtual_time=state.virtual_time + round_s), row
    mean_delta = jax.block_until_ready(agg.mean_delta)
    if s.secure:
      row["host_seconds_secagg"] = time.perf_counter() - tick
      row.update(_secagg_fields(agg.secagg))
    # (4) server step, and FLuID's choice for the next round from this round's updates.
    server = s.server_step(state.server, mean_delta)
    fluid_state = state.fluid
    if s.fluid_update is not None:  # voters: this round's non-stragglers that reported
      voters = jnp.asarray(~is_straggler & agg.survivors)
      fluid_key = jax.random.fold_in(jax.random.fold_in(s.base_key, 0xF1D), r)
      fluid_state, fluid_row = s.fluid_update(fluid_state, params, trained.delta, voters,
                                              jnp.asarray(keep), fluid_key)
      row.update(fluid_row)
    # (5) the virtual clock.
    times = s.clock.times(r, charged)
    round_s = devices.round_time(times, agg.survivors, s.server_seconds)
    pruning = np.asarray(keep) < 1.0
    row.update({
        "train_loss": float(np.sum(host["loss"]) / max(np.sum(host["seen"]), 1.0)),
        "round_time_s": round_s, "virtual_time_s": state.virtual_time + round_s,
        "invariant_units": np.where(pruning, host["inv"], 0).astype(int).tolist(),
        "slack_units": np.where(pruning, host["slack"], 0).astype(int).tolist(),
        "survivors": np.asarray(agg.survivors, bool).tolist(),
        "server_seconds": s.server_seconds,
    })
    row.update(clock_lib.metrics_fields(times, charged))
    return RunState(server=server, clip=state.clip, fluid=fluid_state, last_times=times, virtual_time=state.virtual_time + round_s), row

  return Algorithm(init, apply)


def _secagg_fields(result) -> dict[str, Any]:
  """The SecAgg fields of a metrics row: survivors, drop-outs, bytes per client."""
  stats = result.stats
  sent = sum(np.asarray(v, np.float64) for v in stats.bytes_sent.values())
  received = sum(np.asarray(v, np.float64) for v in stats.bytes_received.values())
  return {"secagg_survivors": int(np.sum(result.survivors)),
          "secagg_dropped": int(np.size(result.survivors) - np.sum(result.survivors)),
          "secagg_bytes_sent_per_client": float(np.mean(sent)),
          "secagg_bytes_received_per_client": float(np.mean(received)),
          "secagg_seconds": {k: round(float(v), 4) for k, v in stats.seconds.items()},
          "secagg_nonfinite": list(result.nonfinite),
          "secagg_too_few_holders": list(result.too_few_holders)}


def recompute_round_time(row: dict) -> float:
  """A round's time from its per-client components in `metrics.jsonl` alone (DESIGN 2.1).

  Aborted rounds are charged by `secagg.aborted_round_seconds` and are not recomputed here.
  """
  total = (np.asarray(row["download_s"]) + np.asarray(row["fit_s"]) + np.asarray(row["mask_s"])
           + np.asarray(row["upload_s"]) + np.asarray(row["latency_s"]))
  survivors = np.asarray(row["survivors"], bool)
  return float(np.max(total[survivors]) + row["server_seconds"])
