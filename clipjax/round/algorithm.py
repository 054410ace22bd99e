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
     (`chunks.train_and_sum`); under `clip.upload=planes` into two SecAgg instances, the low
     one without the network stragglers (`low_instance`, `clipjax.secagg.plane_sum`);
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
SecAgg every client's encoding and, unless `secagg.simulate=sum`, its masking and ChaCha20 mask
expansion) and the end of the aggregation (`host_seconds_secagg`: unmasking and decoding).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from clipjax import fluid as fluid_lib
from clipjax import methods, models, secagg
from clipjax.secagg import plane_sum
from clipjax.secagg import planes as planes_lib
from clipjax.clip import broadcast
from clipjax.clip import histogram as histogram_lib
from clipjax.clip import reports as reports_lib
from clipjax.clock import charges as charges_lib
from clipjax.clock import round_time
from clipjax.clock import server as server_clock
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

  The round's randomness is (seed, round): the drop-outs (injected in SecAgg runs only) and
  the simulated clients' graph nonces, from which the SecAgg+ graph follows once they are
  committed (`secagg.graph_randomness`). Under
  `simulate=sum` no key is drawn (`clipjax.secagg.fast_sum`): neither the secure sum nor the
  sealed time broadcast (`broadcast.exchange_time_reports`) needs one.

  Raises:
    secagg.RoundAborted: too few clients advertised keys.
  """
  if setting is None:
    return None
  dropouts = secagg.Dropouts(rate=setting.dropout_rate) if inject_dropouts else None
  return secagg.setup_round(num, seed=seed * 1_000_003 + round_index, round_index=round_index,
                            dropouts=dropouts, simulate=setting.simulate_mode(round_index),
                            graph_randomness=setting.graph_randomness, **setting.kwargs)


@dataclasses.dataclass(frozen=True)
class _Round:
  """What the stages of one round share once the cohort is known."""

  index: int
  ids: np.ndarray                 # int[C] the cohort's population ids
  params: PyTree                  # w(t)
  num_params: int                 # D
  full_units: dict                # {layer: int[C]} every unit kept
  sends_reference: bool           # the server sends w(t-1) too (a second download)
  setup: Any = None               # the round's key agreement


def _open_round(setting: RoundSetting, state: RunState, r: int, ids: np.ndarray) -> _Round:
  params = state.server.params
  return _Round(
      index=r, ids=ids, params=params,
      num_params=models.num_params(params),
      full_units={layer.name: np.full(len(ids), layer.size) for layer in setting.unit_spec},
      # w(t-1) is sent once a model has a predecessor, to every client (asking only when it
      # prunes would tell the server who the stragglers are).
      sends_reference=setting.server_reference and int(state.server.round) > 0)


def _report_net(times, charged, planes, num_params: int) -> np.ndarray:
  """The `net` each client reports (`ClientTimes.report_net`); under `clip.upload=planes` at
  full precision, as if it had sent both planes, so T* and each client's own test rank the
  same configuration every round (`PlaneCharges.full_precision_net`)."""
  if planes is None:
    return times.report_net
  return planes.full_precision_net(times, charged, num_params)


def _abort(setting: RoundSetting, state: RunState, rnd: _Round, err, charged, row: dict, *,
           measured: bool, planes=None) -> tuple[RunState, dict]:
  """Closes an aborted round; `measured`: the clients trained, so their times are known."""
  times = setting.clock.times(rnd.index, charged, rnd.ids)
  round_s = round_time.aborted_round_seconds(times, err.stage, err.participants,
                                             setting.server.seconds)
  row = record.aborted(row, err, times, charged, round_s, state.virtual_time,
                       setting.server.seconds)
  reports = (state.reports.update(rnd.ids, times.fit_full,
                                  _report_net(times, charged, planes, rnd.num_params))
             if measured else state.reports)
  return dataclasses.replace(state, reports=reports,
                             virtual_time=state.virtual_time + round_s), row


def _decide(setting: RoundSetting, state: RunState, rnd: _Round, liars: np.ndarray,
            charger: charges_lib.RoundCharger) -> tuple[np.ndarray, broadcast.Decision]:
  """(clients with times to report, the straggler decision) of the cohort."""
  reported = state.reports.known(rnd.ids)  # clients that trained before have times to report
  fit, net = (np.nan_to_num(a[rnd.ids]) for a in (state.reports.fit_full, state.reports.net))
  bounds = lambda relay: reports_lib.round_bounds(  # noqa: E731
      setting.reports, setting.clock, charger, num=len(rnd.ids), full_units=rnd.full_units,
      num_params=rnd.num_params, setup=rnd.setup, relay_bytes=relay,
      reference=rnd.sends_reference)
  histograms = None
  if setting.reports.histogram is not None:
    # What the last secure sum delivered: its survivors' times as they reported them (a liar's
    # one-hot rows hold its scaled times), binned.
    summed = state.reports.summed
    said_fit, said_net = reports_lib.reported(state.reports.fit_full[summed],
                                              state.reports.net[summed], liars[summed],
                                              setting.reports.factor)
    histograms = histogram_lib.TimeHistograms.of(said_fit, said_net, setting.reports.histogram)
  return reported, broadcast.decide_stragglers(
      setting.method, setup=rnd.setup, reported=reported, fit=fit, net=net,
      liars=liars[rnd.ids], any_liars=bool(liars.any()), reports=setting.reports,
      keep=setting.keep, bounds=bounds, histograms=histograms,
      upload_planes=setting.upload_planes)


def _scores(setting: RoundSetting, state: RunState, rnd: _Round,
            row: dict) -> tuple[cohort_lib.References, Any]:
  """The cohort downloads w(t); CLIP clients score it against their reference."""
  version = int(state.server.round)
  if setting.server_reference:  # the server sends w(t-1) too: every client scores against it
    refs, scores, _ = cohort_lib.reference_scores(setting.scorer, rnd.params, state.refs,
                                                   rnd.ids, version,
                                                   prev_params=state.server.prev_params)
    return refs, scores
  if not setting.scores_needed:
    return state.refs, None
  refs, scores, unreferenced = cohort_lib.reference_scores(setting.scorer, rnd.params,
                                                           state.refs, rnd.ids, version)
  if len(rnd.ids) < setting.data.population:
    row["clients_without_reference"] = unreferenced
  return refs, scores


def low_instance(setting: RoundSetting, rnd: _Round, high_only: np.ndarray | None,
                 histogram_words: int):
  """`clip.upload=planes`: (the low instance's `plane_sum.low_setup` result, its members'
  cohort ids), and the bit-plane charges' (ring bits, members) once the straggler decision
  is known. Its AdvertiseKeys and ShareKeys ride in the high instance's messages."""
  num = len(rnd.ids)
  high_only = np.zeros(num, bool) if high_only is None else np.asarray(high_only, bool)
  members = plane_sum.low_members(num, high_only)
  kwargs = {**setting.key_agreement.kwargs,
            "graph_randomness": setting.key_agreement.graph_randomness}
  seed = int(np.random.SeedSequence([setting.seed, rnd.index, 0x6C6F]).generate_state(1)[0])
  low = plane_sum.low_setup(rnd.setup, members, seed=seed, **kwargs)
  secure = setting.aggregator.secure
  low_bits = secure.bits - secure.high_bits
  in_low = np.zeros(num, bool)
  streams = np.zeros(num, np.int64)
  if isinstance(low, secagg.RoundSetup):  # else: no low instance this round (`low` says why)
    in_low[members] = True
    streams[members] = [1 + len(low.neighbours(i)) for i in range(len(members))]
  rings = planes_lib.rings(num, len(members), low_bits, secure.bits)
  charges = charges_lib.PlaneCharges(
      rings[0], rings[1], in_low, streams,
      full_low_ring=planes_lib.ring_bits(num, "low", low_bits, secure.bits),
      histogram_words=histogram_words)
  return (low, members), charges


def _train(setting: RoundSetting, state: RunState, rnd: _Round, keep: np.ndarray,
           scores, low=None) -> tuple[Any, chunks.Trained]:
  """Masks and local training, chunk by chunk, each chunk summed as it is trained."""
  scale, num = setting.scale, len(rnd.ids)
  accumulator = setting.aggregator.begin(
      setting.data.weights[rnd.ids], rnd.setup, scale.processes,
      chunks.process_layout(num, scale.chunk, scale.mesh, scale.processes), low=low)
  trained = chunks.train_and_sum(
      setting.pruned_round, accumulator, params=rnd.params, scores=scores,
      clip_state=state.clip, choice=state.fluid.choice if state.fluid is not None else None,
      keep=keep, keys=clients_lib.client_keys(setting.base_key, jnp.int32(rnd.index),
                                               jnp.asarray(rnd.ids)),
      ids=rnd.ids, data=setting.data, chunk=scale.chunk, mesh=scale.mesh,
      processes=scale.processes, keep_deltas=setting.fluid is not None)
  return accumulator, trained


def make_round(setting: RoundSetting) -> Algorithm:
  """Builds the round of `setting.method` (see the module docstring)."""
  population = setting.data.population
  cohort_size = setting.scale.cohort or population
  liars = (np.zeros(population, bool) if setting.reports.liars is None
           else np.asarray(setting.reports.liars, bool))
  edges = setting.reports.histogram
  charger = charges_lib.RoundCharger(
      secagg_on=setting.secagg_on,
      upload_vectors=aggregation.upload_vectors(setting.aggregation_rule, setting.secagg_on),
      server_prunes=setting.method.server_prunes,
      histogram_words=0 if edges is None else histogram_lib.words(len(edges) - 1),
      reports_in_share_keys=setting.reports.in_share_keys)
  server_s = setting.server.seconds

  def init(params) -> RunState:
    return RunState(server=setting.server.init(params),
                    clip=methods.init_clip_state(setting.unit_spec, population),
                    fluid=setting.fluid.init() if setting.fluid is not None else None,
                    reports=cohort_lib.Reports.empty(population),
                    refs=cohort_lib.References.empty(population), virtual_time=0.0)

  def apply(state: RunState, r: int) -> tuple[RunState, dict]:
    # (1) the cohort.
    ids, away = cohort_lib.choose(setting.seed, r, population, cohort_size,
                                  setting.unavailable_rate)
    row = record.start(r, len(ids), ids, away, population)
    if len(ids) < setting.min_clients:  # churn left too few: the model stays
      row = record.skipped(row, len(ids), setting.min_clients, state.virtual_time, server_s)
      return dataclasses.replace(state, virtual_time=state.virtual_time + server_s), row
    rnd = _open_round(setting, state, r, ids)
    # (2) key agreement.
    try:
      rnd = dataclasses.replace(rnd, setup=agree_keys(setting.key_agreement, len(ids),
                                                      setting.seed, r, setting.secagg_on))
    except secagg.RoundAborted as e:  # too few keys advertised: the round ends before training
      charged = charger(rnd.full_units, np.full(len(ids), rnd.num_params), rnd.num_params, None,
                        False, (0, 0), rnd.sends_reference)
      return _abort(setting, state, rnd, e, charged, row, measured=False)
    # (3) straggler self-identification and keep fractions.
    reported, decision = _decide(setting, state, rnd, liars, charger)
    row.update(decision.fields)
    if len(ids) < population:
      row["unreported_clients"] = int(np.sum(~reported))
    low, plane_charges = (low_instance(setting, rnd, decision.high_only,
                                       charger.histogram_words)
                          if setting.upload_planes else (None, None))
    if plane_charges is not None:
      row["plane_rings"] = [plane_charges.high_ring, plane_charges.low_ring]
    # (4) the references, (5) training and the chunk sums.
    refs, scores = _scores(setting, state, rnd, row)
    accumulator, trained = _train(setting, state, rnd, decision.keep, scores, low)
    row["host_seconds_train"], row["host_seconds_sum"] = trained.train_s, trained.sum_s
    if plane_charges is not None and not accumulator.low_running:  # it stopped at ShareKeys
      plane_charges = plane_charges.without_low()
    charged = charger(trained.kept_units, trained.kept_params, rnd.num_params, rnd.setup,
                      decision.broadcasting, decision.relay_bytes, rnd.sends_reference,
                      plane_charges)
    state = dataclasses.replace(state, clip=trained.clip_state, refs=refs)  # the clients did
    # (6) aggregation.
    tick = time.perf_counter()
    try:
      agg = accumulator.finish()
    except secagg.RoundAborted as e:  # too few survivors: the model stays as it is
      return _abort(setting, state, rnd, e, charged, row, measured=True, planes=plane_charges)
    mean_delta = jax.block_until_ready(agg.mean_delta)
    if setting.secagg_on:
      row["host_seconds_secagg"] = time.perf_counter() - tick
      row.update(agg.report)
    # (7) the server step, and FLuID's choice for the next round.
    server, fluid_state = setting.server.step(state.server, mean_delta), state.fluid
    if setting.fluid is not None:
      fluid_state, fluid_fields = fluid_lib.server_round(
          setting.fluid.update, fluid_state, rnd.params, trained.deltas, decision.is_straggler,
          agg.survivors, decision.keep, setting.base_key, r)
      row.update(fluid_fields)
    # (8) the virtual clock: the slowest survivor, then the server's work.
    times = setting.clock.times(r, charged, ids)
    voters = (int(np.sum(~np.asarray(decision.is_straggler) & np.asarray(agg.survivors)))
              if setting.fluid is not None else 0)
    low_summed = None  # the low instance the server unmasked (planes): setup, its survivors
    if low is not None and agg.report.get("secagg_low_aborted") == "":
      low_summed = (low[0], np.asarray(agg.low_survivors, bool)[low[1]])
    work_s, parts = server_clock.seconds(
        server_clock.work(charger, trained.kept_params, rnd.num_params, rnd.setup, agg.survivors,
                        fluid_voters=voters, low=low_summed), setting.server.ops_per_s,
        server_s)
    round_s = round_time.round_time(times, agg.survivors, work_s)
    row = record.finished(
        row, loss_sum=trained.loss_sum, num_seen=trained.num_seen, keep=decision.keep,
        invariant=trained.invariant, slack=trained.slack, survivors=agg.survivors, times=times,
        charged=charged, round_s=round_s, virtual_time=state.virtual_time, server_seconds=work_s)
    row["server_s_parts"] = parts
    return RunState(server=server, clip=state.clip, fluid=fluid_state,
                    reports=state.reports.update(ids, times.fit_full,
                                                 _report_net(times, charged, plane_charges,
                                                             rnd.num_params),
                                                 summed=agg.survivors),
                    refs=state.refs, virtual_time=state.virtual_time + round_s), row

  return Algorithm(init, apply)
