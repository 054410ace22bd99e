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

Populations and cohorts (DESIGN 2.9): the run state holds every population client's state
(invariance thresholds, last reported times, the models it received: `clipjax.population`);
each round samples its cohort of C clients, and the cohort is trained and aggregated in chunks
of `chunk` clients, so memory is set by the chunk, not by C. A chunk's client axis is sharded
over the devices of `mesh` when one is given. With C = K and one chunk a round is exactly the
fixed-participation round.

An aborted SecAgg round leaves the model unchanged, charges the clock for the work done up to
the abort and returns a record with `aborted` set: `apply` never raises `RoundAborted`.

`apply` is host code (pycryptodome, NumPy) around jitted pieces; it times, after blocking on
the device, its training (`host_seconds_train`), the chunk sums (`host_seconds_sum`: under
SecAgg every client's masking and ChaCha20 mask expansion) and the end of the aggregation
(`host_seconds_secagg`: unmasking and decoding).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from clipjax import broadcast, methods, multihost, secagg
from clipjax import population as population_lib
from clipjax import virtual_clock as clock_lib
from clipjax.clip import devices
from clipjax.clip import keep as keep_lib
from clipjax.clip import reports as reports_lib
from clipjax.fl import aggregation
from clipjax.fl import round as round_lib
from clipjax.fl import server as server_lib

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RunState:
  """Everything a run carries from one round to the next.

  Attributes:
    server: global model w(t), w(t-1), server-optimiser state.
    clip: per-client CLIP invariance state of the whole population, [K].
    fluid: FLuID's server state (thresholds and the drop order for the next round's
      stragglers, `fluid.FluidState`), None for other methods.
    reports: each population client's last measured times (`population.Reports`).
    refs: the global models each population client received (`population.References`);
      models are kept only for methods that score invariance on the client.
    virtual_time: seconds on the virtual clock so far.
  """

  server: server_lib.ServerState
  clip: Any
  fluid: Any
  reports: population_lib.Reports
  refs: population_lib.References
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
class ReportSetting:
  """Time reports beyond the paper (`clipjax.clip.reports`): who lies, by how much, and the
  decision rule. The default is DESIGN 2.2: nobody lies, the plain quantile."""

  liars: np.ndarray | None = None   # bool[K] population clients that lie
  factor: float = 1.0               # their reported times = true x factor
  rule: str = "quantile"            # `reports.REPORT_RULES`
  tiers: Any = None                 # public `devices.Tiers` (plausible rule)
  max_examples: float = 0.0         # public bound on a client's examples (plausible rule)
  jitter_sigma: float = 0.0
  sigmas: float = 4.0


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
    x, y, valid: the population's training data on the host, [K, ...]; each chunk's rows
      are gathered and put on the device(s) per round.
    weights: f32[K] training examples per client (FedAvg weights).
    base_key: typed key of the run.
    seed: the run's integer seed.
    server_seconds: the server's own seconds per round.
    fluid_init, fluid_update: FLuID's server side (`clipjax.fluid`): `fluid_init() ->
      FluidState` and `fluid_update(state, params, deltas, voters, keep, key) -> (state,
      metrics dict)`; None for the other methods.
    scorer: `methods.make_scorer`: `(params, reference) -> scores` (CLIP only).
    cohort: clients per round C (None: the whole population).
    chunk: clients trained and summed at once (0: the whole cohort).
    mesh: a `jax.sharding.Mesh` with axis "clients" to shard each chunk over, or None.
    processes: this process's place among several (`clipjax.multihost`): it trains its slice
      of every cohort; `multihost.SINGLE` for one process.
    reports: lying clients and the straggler decision rule (`ReportSetting`).
    reference: what CLIP scores w(t) against (`population.REFERENCES`): `last_seen`, the last
      different model the client received; `server`, the server's w(t-1), sent as a second
      download.
    unavailable_rate: each cohort client is away this round with this probability
      (`population.away`): it takes no part and misses the round's model.
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
  scorer: Callable | None = None
  cohort: int | None = None
  chunk: int = 0
  mesh: Any = None
  processes: multihost.Processes = multihost.SINGLE
  reports: ReportSetting = ReportSetting()
  reference: str = "last_seen"
  unavailable_rate: float = 0.0


def _broadcast_bytes(relay, num: int) -> tuple[np.ndarray, np.ndarray]:
  sent, received = np.zeros(num), np.zeros(num)
  for u, v, ciphertext in relay.transcript:
    sent[u] += len(ciphertext)
    received[v] += len(ciphertext)
  return sent, received


def _chunks(rows: np.ndarray, size: int, multiple: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """(rows, padded rows) per chunk of `rows`: padded to one fixed length (a multiple of
  `multiple`) with repeats of the chunk's first row, so every chunk has one shape and compiles
  once."""
  num = len(rows)
  if num == 0:
    return []
  size = -(-min(size or num, num) // multiple) * multiple
  out = []
  for start in range(0, num, size):
    part = rows[start:start + size]
    out.append((part, np.concatenate([part, np.full(size - len(part), part[0])])))
  return out


def _take(tree, n: int, size: int):
  """The first n rows of every leaf (no copy when nothing was padded)."""
  return tree if n == size else jax.tree.map(lambda a: a[:n], tree)


def make_round(setting: RoundSetting) -> Algorithm:
  """Builds the round of `setting.method` (see the module docstring)."""
  s = setting
  method = s.method
  population = len(s.weights)
  cohort_size = s.cohort or population
  server_reference = s.reference == "server" and method.masks == "client_invariance"
  scores_needed = method.masks == "client_invariance"
  liars = (np.zeros(population, bool) if s.reports.liars is None
           else np.asarray(s.reports.liars, bool))
  min_clients = 1  # key agreement needs 2 clients, and an explicit t or k as many as they say
  if s.keys is not None:
    fixed = s.keys.kwargs
    min_clients = max(2, fixed.get("threshold") or 0, (fixed.get("degree") or 0) + 1)
  flat_size = None  # D: fixed for the run, counted from the first params seen
  unravel = None
  if s.mesh is not None:
    sharding = jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec("clients"))
    put = lambda a: jax.device_put(a, sharding)  # noqa: E731
    multiple = s.mesh.devices.size
  else:
    put, multiple = jnp.asarray, 1

  def init(params) -> RunState:
    return RunState(server=s.server_init(params),
                    clip=methods.init_clip_state(s.unit_spec, population),
                    fluid=s.fluid_init() if s.fluid_init is not None else None,
                    reports=population_lib.Reports.empty(population),
                    refs=population_lib.References.empty(population), virtual_time=0.0)

  def charge(num, kept_units, kept_params, num_params, setup, broadcasting, relay_bytes,
             reference=False):
    streams = (np.asarray([1 + len(setup.neighbours(u)) for u in range(num)])
               if (s.secure and setup is not None) else 0)
    sent, received = relay_bytes
    return clock_lib.charges(
        kept_units=kept_units, kept_params=kept_params, num_params=num_params, secure=s.secure,
        upload_vectors=aggregation.upload_vectors(s.aggregation, s.secure), prg_streams=streams,
        broadcast=broadcasting, broadcast_bytes_sent=sent, broadcast_bytes_received=received,
        server_prunes=method.server_prunes, reference_download=reference)

  def report_bounds(num, full_units, setup, relay_bytes, reference) -> reports_lib.Bounds:
    """What an honest report can show, from public quantities (`reports.plausible_bounds`):
    a client's charges in a round without and with the broadcast; in the clear, from an
    upload of nothing but the weight to the full model."""
    kept = [flat_size] if s.secure else [0, flat_size]  # in the clear the upload shrinks
    nominal = [charge(num, full_units, np.full(num, k), flat_size, setup, b,
                      relay_bytes if b else (0, 0), reference)
               for b in (False, True) for k in kept]
    pick = lambda f: np.concatenate([f(c) for c in nominal])  # noqa: E731
    rep = s.reports
    return reports_lib.plausible_bounds(
        rep.tiers, full_flops_per_example=s.clock.flops_per_example(dict(s.clock.full_widths)),
        max_examples=rep.max_examples, epochs=s.clock.epochs,
        download_bytes=pick(lambda c: c.download_bytes), upload_bytes=pick(lambda c: c.upload_bytes),
        mask_flops=pick(lambda c: c.mask_words) * clock_lib.CHACHA_OPS_PER_WORD,
        messages=pick(lambda c: c.messages), jitter_sigma=rep.jitter_sigma, sigmas=rep.sigmas)

  def aborted(state, r, ids, err, charged, row):
    times = s.clock.times(r, charged, ids)
    round_s = secagg.aborted_round_seconds(times, err, s.server_seconds)
    row.update({"aborted": str(err), "aborted_stage": err.stage,
                "aborted_participants": list(err.participants), "train_loss": float("nan"),
                "secagg_nonfinite": list(err.nonfinite),
                "secagg_too_few_holders": list(err.too_few_holders),
                "round_time_s": round_s, "virtual_time_s": state.virtual_time + round_s})
    row.update(clock_lib.metrics_fields(times, charged))
    row["survivors"] = [False] * len(ids)
    row["server_seconds"] = s.server_seconds
    return row, times, round_s

  def client_scores(params, refs, ids):
    """Each cohort client's invariance scores against the model it received before."""
    nonlocal unravel
    if unravel is None:
      unravel = ravel_pytree(params)[1]
    versions = refs.ref[ids]
    unique = np.unique(versions)
    per_version = [s.scorer(params, params if v < 0 else unravel(jnp.asarray(refs.models[v])))
                   for v in unique]
    index = jnp.asarray(np.searchsorted(unique, versions))
    return jax.tree.map(lambda *a: jnp.stack(a)[index], *per_version), int(np.sum(versions < 0))

  def apply(state: RunState, r: int) -> tuple[RunState, dict]:
    nonlocal flat_size
    # w(t-1) is sent once a model has a predecessor, to every client (asking only when it
    # prunes would tell the server who the stragglers are).
    sends_reference = server_reference and int(state.server.round) > 0
    ids = population_lib.sample_cohort(s.seed, r, population, cohort_size)
    away = population_lib.away(s.seed, r, ids, s.unavailable_rate)
    ids = ids[~away]
    num = len(ids)
    row: dict[str, Any] = {"round": r + 1, "stragglers": [], "keep_fraction": [1.0] * num}
    if s.unavailable_rate > 0:
      row["away"] = int(away.sum())
    if num < population:
      row["cohort"] = ids.tolist()
    if num < min_clients:  # churn left too few: nothing to train or agree keys, the model stays
      empty = np.zeros(0)
      row.update({"skipped": f"{num} cohort clients available, fewer than the {min_clients} "
                             "this round needs", "train_loss": float("nan"),
                  "round_time_s": s.server_seconds, "server_seconds": s.server_seconds,
                  "virtual_time_s": state.virtual_time + s.server_seconds, "survivors": [],
                  "invariant_units": [], "slack_units": [], "download_s": [], "fit_s": [],
                  "mask_s": [], "upload_s": [], "latency_s": [], "messages": [],
                  "client_time_s": empty.tolist(), "keep_fraction": [1.0] * num})
      return dataclasses.replace(state, virtual_time=state.virtual_time + s.server_seconds), row
    params = state.server.params
    if flat_size is None:
      flat_size = int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(params)))
    full_units = {layer.name: np.full(num, layer.size) for layer in s.unit_spec}
    round_seed = s.seed * 1_000_003 + r
    # (1) keys, then straggler self-identification and keep fractions.
    setup = None
    if s.keys is not None:
      dropouts = secagg.Dropouts(rate=s.keys.dropout_rate) if s.secure else None
      try:
        setup = secagg.setup_round(num, seed=round_seed, round_index=r, dropouts=dropouts,
                                   **s.keys.kwargs)
      except secagg.RoundAborted as e:  # too few keys advertised: the round ends before training
        charged = charge(num, full_units, np.full(num, flat_size), flat_size, None, False,
                         (0, 0), sends_reference)
        row, _, round_s = aborted(state, r, ids, e, charged, row)
        return dataclasses.replace(state, virtual_time=state.virtual_time + round_s), row
    is_straggler = np.zeros(num, bool)
    keep = np.ones(num, np.float32)
    broadcasting = False
    relay_bytes = (0, 0)
    reported = state.reports.known(ids)  # clients that trained before have times to report
    if method.prunes and reported.any():
      fit, net = (np.nan_to_num(a[ids]) for a in (state.reports.fit_full, state.reports.net))
      said_fit, said_net = reports_lib.reported(fit, net, liars[ids], s.reports.factor)
      if method.broadcasts:
        alive = np.isin(np.arange(num), setup.advertised) & reported
        known, relay = broadcast.exchange_time_reports(setup, said_fit, said_net, alive)
        broadcasting = True
        relay_bytes = _broadcast_bytes(relay, num)
        row["broadcast_bytes"] = relay.bytes_relayed
      else:  # the server sees every client's times in the clear (FLuID's clients report them)
        known = broadcast.KnownTimes(fit=np.tile(said_fit, (num, 1)),
                                     net=np.tile(said_net, (num, 1)),
                                     valid=~np.eye(num, dtype=bool) & reported[None, :])
      if liars.any():
        row["liars"] = np.flatnonzero(liars[ids]).tolist()
      if s.reports.rule == "plausible":  # implausible reports count as never received
        bounds = report_bounds(num, full_units, setup, relay_bytes, sends_reference)
        allowed = bounds.allows(known.fit, known.net)
        row["implausible_reports"] = int(np.sum(known.valid & ~allowed))
        known = dataclasses.replace(known, valid=known.valid & allowed)
      is_straggler, keep = broadcast.decide_keep_fractions(
          known, fit, net, straggler_fraction=s.keep.straggler_fraction, rule=method.keep_rule,
          table=s.keep.table, rho_min=s.keep.rho_min)
      is_straggler = np.asarray(is_straggler) & reported  # no own times: no decision
      keep = np.where(reported, keep, 1.0).astype(np.float32)
      row["stragglers"] = np.flatnonzero(is_straggler).tolist()
      row["keep_fraction"] = [round(float(p), 4) for p in keep]
    if num < population:
      row["unreported_clients"] = int(np.sum(~reported))
    # The cohort downloads w(t); CLIP clients score it against the model they received before.
    refs, scores = state.refs, None
    if server_reference:  # the server sends w(t-1) too: every client scores against it
      one = s.scorer(params, state.server.prev_params)
      scores = jax.tree.map(lambda a: jnp.broadcast_to(a, (num,) + a.shape), one)
    elif scores_needed:
      refs = refs.download(ids, int(state.server.round), np.asarray(ravel_pytree(params)[0]))
      scores, unreferenced = client_scores(params, refs, ids)
      if num < population:
        row["clients_without_reference"] = unreferenced
    # (2) masks and local training, chunk by chunk, each chunk summed as it is trained.
    keys = round_lib.client_keys(s.base_key, jnp.int32(r), jnp.asarray(ids))
    choice = state.fluid.choice if state.fluid is not None else None
    procs = s.processes
    layout = [[rows for rows, _ in _chunks(procs.rows(num, p), s.chunk, multiple)]
              for p in range(procs.count)]
    accumulator = s.aggregate.begin(s.weights[ids], setup, procs, layout)
    clip_state = state.clip
    host_parts, deltas, clip_rows = [], [], []
    train_s = sum_s = 0.0
    for rows, padded in _chunks(procs.rows(num), s.chunk, multiple):
      n, pid = len(rows), ids[padded]
      tick = time.perf_counter()
      trained = jax.block_until_ready(s.pruned_round(
          params, None if scores is None else jax.tree.map(lambda a: put(a[padded]), scores),
          jax.tree.map(lambda a: put(a[pid]), clip_state), choice,
          put(keep[padded]), put(keys[padded]), put(s.x[pid]), put(s.y[pid]),
          put(s.valid[pid])))
      train_s += time.perf_counter() - tick
      out = _take(trained, n, len(padded))
      host_parts.append(jax.device_get({
          "kept": out.kept_units, "kept_params": out.kept_params, "loss": out.loss_sum,
          "seen": out.num_seen, "inv": out.invariant_units, "slack": out.slack_units}))
      if procs.count == 1:
        clip_state = jax.tree.map(lambda a, b: a.at[pid[:n]].set(b), clip_state, out.clip_state)
      else:
        clip_rows.append((pid[:n], jax.device_get(out.clip_state)))
      tick = time.perf_counter()
      accumulator.add(rows, out.delta, out.param_prune_mask)  # SecAgg: the chunk's masking
      sum_s += time.perf_counter() - tick
      if s.fluid_update is not None:
        deltas.append(out.delta)
      del trained, out
    row["host_seconds_train"] = train_s
    row["host_seconds_sum"] = sum_s
    if procs.count > 1:  # every process gets all clients' metrics and invariance state
      host_parts = sum(procs.allgather(host_parts), [])
      for pid, rows_state in sum(procs.allgather(clip_rows), []):
        clip_state = jax.tree.map(lambda a, b: a.at[pid].set(b), clip_state, rows_state)
    host = {k: np.concatenate([np.asarray(p[k]) for p in host_parts])
            for k in ("kept_params", "loss", "seen", "inv", "slack")}
    kept = {k: np.concatenate([np.asarray(p["kept"][k]) for p in host_parts])
            for k in host_parts[0]["kept"]}
    charged = charge(num, kept, host["kept_params"], flat_size, setup, broadcasting, relay_bytes,
                     sends_reference)
    state = dataclasses.replace(state, clip=clip_state, refs=refs)  # the clients did update it
    # (3) aggregation.
    tick = time.perf_counter()
    try:
      agg = accumulator.finish()
    except secagg.RoundAborted as e:  # too few survivors: the model stays as it is
      row, times, round_s = aborted(state, r, ids, e, charged, row)
      return dataclasses.replace(
          state, reports=state.reports.update(ids, times.fit_full, times.report_net),
          virtual_time=state.virtual_time + round_s), row
    mean_delta = jax.block_until_ready(agg.mean_delta)
    if s.secure:
      row["host_seconds_secagg"] = time.perf_counter() - tick
      row.update(agg.report)
    # (4) server step, and FLuID's choice for the next round from this round's updates.
    server = s.server_step(state.server, mean_delta)
    fluid_state = state.fluid
    if s.fluid_update is not None:  # voters: this round's non-stragglers that reported
      voters = jnp.asarray(~is_straggler & agg.survivors)
      fluid_key = jax.random.fold_in(jax.random.fold_in(s.base_key, 0xF1D), r)
      all_deltas = deltas[0] if len(deltas) == 1 else jax.tree.map(
          lambda *a: jnp.concatenate(a), *deltas)
      fluid_state, fluid_row = s.fluid_update(fluid_state, params, all_deltas, voters,
                                              jnp.asarray(keep), fluid_key)
      row.update(fluid_row)
    # (5) the virtual clock.
    times = s.clock.times(r, charged, ids)
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
    return RunState(server=server, clip=state.clip, fluid=fluid_state,
                    reports=state.reports.update(ids, times.fit_full, times.report_net),
                    refs=state.refs, virtual_time=state.virtual_time + round_s), row

  return Algorithm(init, apply)


def recompute_round_time(row: dict) -> float:
  """A round's time from its per-client components in `metrics.jsonl` alone (DESIGN 2.1).

  Aborted rounds are charged by `secagg.aborted_round_seconds` and are not recomputed here.
  """
  total = (np.asarray(row["download_s"]) + np.asarray(row["fit_s"]) + np.asarray(row["mask_s"])
           + np.asarray(row["upload_s"]) + np.asarray(row["latency_s"]))
  survivors = np.asarray(row["survivors"], bool)
  return float(np.max(total[survivors], initial=0.0) + row["server_seconds"])
