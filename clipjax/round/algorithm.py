"""One federated round of any method as an `(init, apply)` algorithm (DESIGN 1, 2.1-2.9).

`make_round(setting)` returns `Algorithm(init, apply)`:

* `init(params) -> RunState`: the whole state of a run between rounds (server state, every
  population client's invariance state, FLuID's server-side choice, last round's times, the
  models each client received, virtual time).
* `apply(state, round_index) -> (RunState, record)`: one round, as the protocol's stages in
  order, each a short function in the module that owns its concept:

  1. the cohort (`cohort.choose`); too few clients: the round is skipped;
  2. key agreement (`agree_keys`: SecAgg's and the broadcast's pairwise keys);
  3. straggler self-identification and keep fractions (`broadcast.decide_stragglers`);
  4. the reference models CLIP scores against (`cohort.reference_scores`);
  5. masked local training, chunk by chunk, each chunk summed as it is trained
     (`chunks.train_and_sum`);
  6. aggregation (`clipjax.fl.aggregation`; SecAgg may abort here);
  7. the server step, and FLuID's choice for the next round (`fluid.server_round`);
  8. the virtual clock: each client is charged what it took part in
     (`clipjax.clock.charges`), the round lasts as its slowest survivor
     (`clipjax.clock.round_time`);

  `record` is the round's row of `metrics.jsonl` (`clipjax.round.record`, `docs/metrics.md`);
  the loop in `clipjax.experiment` adds evaluation and host seconds, writes it and
  checkpoints.

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

from clipjax import fluid as fluid_lib
from clipjax import methods, secagg
from clipjax.clip import broadcast
from clipjax.clip import reports as reports_lib
from clipjax.clock import charges as charges_lib
from clipjax.clock import round_time
from clipjax.fl import aggregation
from clipjax.fl import clients as clients_lib
from clipjax.fl import server as server_lib
from clipjax.round import chunks, record
from clipjax.round import cohort as cohort_lib
from clipjax.round.settings import KeyAgreementSetting, RoundSetting

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RunState:
  """Everything a run carries from one round to the next.

  Attributes:
    server: global model w(t), w(t-1), server-optimiser state.
    clip: per-client CLIP invariance state of the whole population, [K].
    fluid: FLuID's server state (`fluid.FluidState`), None for other methods.
    reports: each population client's last measured times (`cohort.Reports`).
    refs: the global models each population client received (`cohort.References`);
      models are kept only for methods that score invariance on the client.
    virtual_time: seconds on the virtual clock so far.
  """

  server: server_lib.ServerState
  clip: Any
  fluid: Any
  reports: cohort_lib.Reports
  refs: cohort_lib.References
  virtual_time: float


class Algorithm(NamedTuple):
  init: Callable
  apply: Callable


def agree_keys(setting: KeyAgreementSetting | None, num: int, seed: int, round_index: int,
               inject_dropouts: bool):
  """The round's key agreement (`secagg.setup_round`), or None when no step needs keys.

  The round's randomness is (seed, round); drop-outs are injected in SecAgg runs only.

  Raises:
    secagg.RoundAborted: too few clients advertised keys.
  """
  if setting is None:
    return None
  dropouts = secagg.Dropouts(rate=setting.dropout_rate) if inject_dropouts else None
  return secagg.setup_round(num, seed=seed * 1_000_003 + round_index, round_index=round_index,
                            dropouts=dropouts, **setting.kwargs)


def _num_params(params) -> int:
  return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(params)))


def make_round(setting: RoundSetting) -> Algorithm:
  """Builds the round of `setting.method` (see the module docstring)."""
  s = setting
  population = s.data.population
  cohort_size = s.scale.cohort or population
  liars = (np.zeros(population, bool) if s.reports.liars is None
           else np.asarray(s.reports.liars, bool))
  charger = charges_lib.RoundCharger(
      secagg_on=s.secagg_on, upload_vectors=aggregation.upload_vectors(s.aggregation_rule, s.secagg_on),
      server_prunes=s.method.server_prunes)

  def init(params) -> RunState:
    return RunState(server=s.server.init(params),
                    clip=methods.init_clip_state(s.unit_spec, population),
                    fluid=s.fluid.init() if s.fluid is not None else None,
                    reports=cohort_lib.Reports.empty(population),
                    refs=cohort_lib.References.empty(population), virtual_time=0.0)

  def abort(state, r, ids, err, charged, row, *, measured: bool):
    """Closes an aborted round; `measured`: the clients trained, so their times are known."""
    times = s.clock.times(r, charged, ids)
    round_s = round_time.aborted_round_seconds(times, err.stage, err.participants,
                                               s.server.seconds)
    row = record.aborted(row, err, times, charged, round_s, state.virtual_time, s.server.seconds)
    reports = (state.reports.update(ids, times.fit_full, times.report_net) if measured
               else state.reports)
    return dataclasses.replace(state, reports=reports,
                               virtual_time=state.virtual_time + round_s), row

  def decide(state, ids, setup, full_units, num_params, sends_reference):
    reported = state.reports.known(ids)  # clients that trained before have times to report
    fit, net = (np.nan_to_num(a[ids]) for a in (state.reports.fit_full, state.reports.net))
    bounds = lambda relay: reports_lib.round_bounds(  # noqa: E731
        s.reports, s.clock, charger, num=len(ids), full_units=full_units, num_params=num_params,
        setup=setup, relay_bytes=relay, reference=sends_reference)
    return reported, broadcast.decide_stragglers(
        s.method, setup=setup, reported=reported, fit=fit, net=net, liars=liars[ids],
        any_liars=bool(liars.any()), reports=s.reports, keep=s.keep, bounds=bounds)

  def apply(state: RunState, r: int) -> tuple[RunState, dict]:
    # (1) the cohort.
    ids, away = cohort_lib.choose(s.seed, r, population, cohort_size, s.unavailable_rate)
    num = len(ids)
    row = record.start(r, num, ids, away, population)
    if num < s.min_clients:  # churn left too few: nothing to train or agree keys, the model stays
      row = record.skipped(row, num, s.min_clients, state.virtual_time, s.server.seconds)
      return dataclasses.replace(state, virtual_time=state.virtual_time + s.server.seconds), row
    params = state.server.params
    num_params = _num_params(params)
    full_units = {layer.name: np.full(num, layer.size) for layer in s.unit_spec}
    # w(t-1) is sent once a model has a predecessor, to every client (asking only when it
    # prunes would tell the server who the stragglers are).
    sends_reference = s.server_reference and int(state.server.round) > 0
    # (2) key agreement.
    try:
      setup = agree_keys(s.key_agreement, num, s.seed, r, inject_dropouts=s.secagg_on)
    except secagg.RoundAborted as e:  # too few keys advertised: the round ends before training
      charged = charger(full_units, np.full(num, num_params), num_params, None, False, (0, 0),
                        sends_reference)
      return abort(state, r, ids, e, charged, row, measured=False)
    # (3) straggler self-identification and keep fractions.
    reported, decision = decide(state, ids, setup, full_units, num_params, sends_reference)
    row.update(decision.fields)
    if num < population:
      row["unreported_clients"] = int(np.sum(~reported))
    # (4) the cohort downloads w(t); CLIP clients score it against their reference.
    refs, scores = state.refs, None
    if s.server_reference:  # the server sends w(t-1) too: every client scores against it
      refs, scores, _ = cohort_lib.reference_scores(s.scorer, params, refs, ids,
                                                     int(state.server.round),
                                                     prev_params=state.server.prev_params)
    elif s.scores_needed:
      refs, scores, unreferenced = cohort_lib.reference_scores(s.scorer, params, refs, ids,
                                                               int(state.server.round))
      if num < population:
        row["clients_without_reference"] = unreferenced
    # (5) masks and local training, chunk by chunk, each chunk summed as it is trained.
    procs = s.scale.processes
    accumulator = s.aggregator.begin(
        s.data.weights[ids], setup, procs,
        chunks.process_layout(num, s.scale.chunk, s.scale.mesh, procs))
    trained = chunks.train_and_sum(
        s.pruned_round, accumulator, params=params, scores=scores, clip_state=state.clip,
        choice=state.fluid.choice if state.fluid is not None else None, keep=decision.keep,
        keys=clients_lib.client_keys(s.base_key, jnp.int32(r), jnp.asarray(ids)), ids=ids,
        data=s.data, chunk=s.scale.chunk, mesh=s.scale.mesh, processes=procs,
        keep_deltas=s.fluid is not None)
    row["host_seconds_train"] = trained.train_s
    row["host_seconds_sum"] = trained.sum_s
    charged = charger(trained.kept_units, trained.kept_params, num_params, setup,
                      decision.broadcasting, decision.relay_bytes, sends_reference)
    state = dataclasses.replace(state, clip=trained.clip_state, refs=refs)  # the clients did
    # (6) aggregation.
    tick = time.perf_counter()
    try:
      agg = accumulator.finish()
    except secagg.RoundAborted as e:  # too few survivors: the model stays as it is
      return abort(state, r, ids, e, charged, row, measured=True)
    mean_delta = jax.block_until_ready(agg.mean_delta)
    if s.secagg_on:
      row["host_seconds_secagg"] = time.perf_counter() - tick
      row.update(agg.report)
    # (7) the server step, and FLuID's choice for the next round.
    server = s.server.step(state.server, mean_delta)
    fluid_state = state.fluid
    if s.fluid is not None:
      fluid_state, fluid_fields = fluid_lib.server_round(
          s.fluid.update, fluid_state, params, trained.deltas, decision.is_straggler,
          agg.survivors, decision.keep, s.base_key, r)
      row.update(fluid_fields)
    # (8) the virtual clock.
    times = s.clock.times(r, charged, ids)
    round_s = round_time.round_time(times, agg.survivors, s.server.seconds)
    row = record.finished(
        row, loss_sum=trained.loss_sum, num_seen=trained.num_seen, keep=decision.keep,
        invariant=trained.invariant, slack=trained.slack, survivors=agg.survivors, times=times,
        charged=charged, round_s=round_s, virtual_time=state.virtual_time,
        server_seconds=s.server.seconds)
    return RunState(server=server, clip=state.clip, fluid=fluid_state,
                    reports=state.reports.update(ids, times.fit_full, times.report_net),
                    refs=state.refs, virtual_time=state.virtual_time + round_s), row

  return Algorithm(init, apply)
