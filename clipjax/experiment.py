"""`run(config, workdir)`: the one loop that owns every side effect of an experiment.

The round itself is `clipjax.algorithm.make_round`, an `(init, apply)` pair; this loop only
builds it from the config, sequences rounds, evaluates, writes `metrics.jsonl` (one row per
round, aborted rounds included), checkpoints and prints.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clipjax import algorithm, fluid as fluid_lib, methods, multihost, report, run_state, secagg
from clipjax import virtual_clock as clock_lib
from clipjax.clip import devices
from clipjax.clip import keep as keep_lib
from clipjax.clip import reports as reports_lib
from clipjax import config_types
from clipjax.config_types import ExperimentSpec
from clipjax.data import example_batch, load_federated, pooled_batch
from clipjax.fl import aggregation
from clipjax.fl import evaluate as evaluate_lib
from clipjax.fl import local
from clipjax.fl import server as server_lib
from clipjax.fl import training
from clipjax.models import flops, get_model


def _to_device(arrays) -> tuple[jax.Array, jax.Array, jax.Array]:
  return jnp.asarray(arrays.x), jnp.asarray(arrays.y), jnp.asarray(arrays.valid)


def _mesh(spec: ExperimentSpec):
  """The devices a chunk's client axis is sharded over (None: one device, no sharding)."""
  if spec.scale.shard_devices <= 1:
    return None
  devices = jax.local_devices()[:spec.scale.shard_devices]
  return jax.sharding.Mesh(np.asarray(devices), ("clients",))


def _tiers(spec: ExperimentSpec) -> devices.Tiers:
  d = spec.devices
  return devices.Tiers(compute={"fast": d.fast_flops, "slow": d.fast_flops * d.slow_compute_ratio})


def _population(spec: ExperimentSpec) -> devices.Population:
  d = spec.devices
  tiers = _tiers(spec)
  counts = {"compute": d.compute_slow, "network": d.network_slow, "both": d.both_slow}
  if sum(counts.values()) == 0:  # default: the straggler fraction, compute-slow
    return devices.make_population(spec.num_clients, straggler_fraction=spec.clip.straggler_fraction,
                                   seed=spec.seed, tiers=tiers)
  return devices.make_population(spec.num_clients, counts=counts, seed=spec.seed, tiers=tiers)


def _fluid_server(unit_spec, spec: ExperimentSpec):
  """FLuID's server side: its dataset's schedule, scaled to the run's length (`fluid.preset`)."""
  config = fluid_lib.preset(spec.data.name, spec.rounds)
  update = jax.jit(lambda st, params, deltas, voters, dropped, key: fluid_lib.server_update(
      st, unit_spec, params, deltas, voters, dropped, key, config=config))

  def fluid_update(state, params, deltas, voters, keep, key):
    dropped = fluid_lib.units_dropped(unit_spec, keep)
    _, state, counts = update(state, params, deltas, voters, dropped, key)
    host = jax.device_get(counts)
    return state, {"fluid_invariant_units": {k: int(v) for k, v in host.invariant.items()},
                   "fluid_fill_units": {k: int(v) for k, v in host.fill.items()},
                   "fluid_threshold": {k: float(v) for k, v in host.threshold.items()}}

  return (lambda: fluid_lib.init_state(unit_spec, config)), fluid_update


def _key_setup_kwargs(spec: ExperimentSpec) -> dict:
  """`secagg.setup_round` / `choose_parameters` arguments: (k, t) from Bell et al.'s analysis."""
  sa = spec.secagg
  threat = secagg.ThreatModel(sa.corruption_fraction, sa.analysed_dropout, sa.security_bits,
                              sa.correctness_bits)
  return dict(protocol=sa.protocol, degree=sa.degree, threshold=sa.threshold, threat=threat,
              allow_weak=sa.allow_weak_parameters)


def build_round(spec: ExperimentSpec, data, model, params,
                processes: multihost.Processes = multihost.SINGLE) -> algorithm.Algorithm:
  """The round algorithm of `spec` on loaded `data` and `model` (validates SecAgg settings).

  Raises:
    ValueError: for SecAgg settings the client count or weights cannot meet, or `fluid` over
      several processes.
  """
  population = len(data.client_ids)
  cohort = spec.clients_per_round
  method = methods.get_method(spec.method)
  batch_fn = lambda x, y, idx: example_batch(data.kind, x, y, idx, seq_len=data.seq_len or 80)  # noqa: E731
  optimizer = optax.sgd(spec.client_lr, momentum=spec.client_momentum or None)
  train = training.make_trainer(model.apply, batch_fn, optimizer,
                                local.LocalSpec(spec.local_epochs, spec.batch_size),
                                loop=spec.local_loop, client_batch=spec.client_batch)
  pruned_round = methods.make_pruned_round(method, model.unit_spec, train, growth=spec.clip.growth,
                                           slack=spec.clip.slack,
                                           threshold_init=spec.clip.threshold_init)
  server_opt = server_lib.make_server_optimizer(spec.server_optimizer, spec.server_lr)
  weights = np.asarray(data.train.num_examples, np.float32)
  sa = spec.secagg
  if spec.reports.rule == "plausible" and weights.max() > sa.max_weight:
    raise ValueError(f"reports.rule='plausible' bounds a client's examples by the public "
                     f"secagg.max_weight={sa.max_weight:g}, but a client has {weights.max():g}; "
                     "raise secagg.max_weight.")
  secure = None
  if sa.enabled:  # a client above the public bound stops the run before any training
    secagg.check_bits(cohort, sa.bits)
    try:
      secagg.weight_codes(weights, population, sa.bits, sa.max_weight)
    except ValueError as e:
      raise ValueError(f"config.secagg.max_weight / training examples per client: {e}") from e
    secure = aggregation.SecureSettings(bits=sa.bits, clip=sa.clip, max_weight=sa.max_weight)
  # Pairwise keys serve SecAgg and the sealed time broadcast.
  keys = None
  if sa.enabled or method.broadcasts:
    kwargs = _key_setup_kwargs(spec)
    secagg.choose_parameters(cohort, **kwargs)  # fails early on impossible (k, t)
    keys = algorithm.SecAggSetting(kwargs=kwargs, dropout_rate=sa.dropout_rate)
  fluid_init = fluid_update = None
  if method.masks == "server_invariance" and processes.count > 1:
    raise ValueError("method 'fluid' reads every client's update on one server and does not run "
                     "over several processes; run it with --num_processes=1.")
  if method.masks == "server_invariance":
    fluid_init, fluid_update = _fluid_server(model.unit_spec, spec)
  clock = clock_lib.ClockModel.for_model(
      model, population=_population(spec), num_examples=np.asarray(data.train.num_examples),
      epochs=spec.local_epochs, seed=spec.seed, jitter_sigma=spec.devices.jitter_sigma)
  table = keep_lib.make_flop_table(lambda p: flops.flop_fraction(model, p), p_min=spec.clip.min_keep,
                                   layer_sizes=model.width_dict)
  train_data = data.train  # host arrays: each round puts its cohort's chunks on the device(s)
  x, y, valid = (np.asarray(a) for a in (train_data.x, train_data.y, train_data.valid))
  return algorithm.make_round(algorithm.RoundSetting(
      method=method, unit_spec=model.unit_spec, pruned_round=pruned_round,
      aggregate=aggregation.make_aggregator(spec.clip.aggregation, params, secure),
      aggregation=spec.clip.aggregation, secure=sa.enabled,
      server_step=jax.jit(lambda st, d: server_lib.server_update(st, d, server_opt)),
      server_init=lambda p: server_lib.server_init(p, server_opt), clock=clock,
      keep=algorithm.KeepSetting(spec.clip.straggler_fraction, table, spec.clip.rho_min),
      keys=keys, x=x, y=y, valid=valid, weights=weights,
      base_key=jax.random.key(spec.seed), seed=spec.seed,
      server_seconds=spec.devices.server_seconds, fluid_init=fluid_init,
      fluid_update=fluid_update, scorer=methods.make_scorer(model.unit_spec, spec.clip.score),
      cohort=cohort, chunk=spec.scale.chunk_clients, mesh=_mesh(spec), processes=processes,
      reports=algorithm.ReportSetting(
          liars=reports_lib.choose_liars(spec.seed, population, spec.reports.liar_fraction),
          factor=spec.reports.liar_factor, rule=spec.reports.rule, tiers=_tiers(spec),
          max_examples=sa.max_weight, jitter_sigma=spec.devices.jitter_sigma,
          sigmas=spec.reports.bound_sigmas),
      reference=spec.clip.reference, unavailable_rate=spec.unavailable_rate))


def _read_rows(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(config, workdir: str, *, stop_after: int | None = None,
        processes: multihost.Processes = multihost.SINGLE) -> dict[str, Any] | None:
  """Runs one experiment, or resumes it; returns its summary (also printed as a table).

  The whole run state is checkpointed every `checkpoint_every` rounds and at the last
  (`clipjax.run_state`). Started again with the same config in the same workdir, a run goes
  on from its newest checkpoint and writes the metrics an uninterrupted run writes (host
  seconds aside); a finished run is not run again.

  Args:
    config: an `ml_collections.ConfigDict` (see `configs/base.py` for every key).
    workdir: output folder: config.json, metrics.jsonl, summary.json, checkpoints/.
    stop_after: stop after this many rounds as if interrupted, with the state checkpointed
      (for tests of resuming); returns None then.
    processes: this process's place when several run the experiment together
      (`clipjax.multihost`). Process 0 writes the outputs into `workdir`; the others write
      theirs into `workdir/process_<i>` (metrics only: they must equal process 0's). Runs over
      several processes are not checkpointed and do not resume.

  Raises:
    ValueError: for any bad config value, missing data, or a workdir that holds another run.
  """
  spec = ExperimentSpec.from_config(config)
  out = pathlib.Path(workdir)
  if not processes.is_lead:
    out = out / f"process_{processes.index}"
  checkpoints = processes.count == 1
  out.mkdir(parents=True, exist_ok=True)
  config_json = config.to_json_best_effort(indent=2, sort_keys=True)
  if (out / "config.json").exists() and not config_types.same_run_config(
      (out / "config.json").read_text(), config):
    if _read_rows(out / "metrics.jsonl"):
      raise ValueError(f"workdir {out} holds a run of another config (its config.json differs); "
                       "choose a new --workdir, or delete that folder to start over.")
  (out / "config.json").write_text(config_json)

  data = load_federated(spec.data.name, num_clients=spec.num_clients or None, seed=spec.seed,
                        data_dir=spec.data.data_dir, partition=spec.data.partition,
                        alpha=spec.data.alpha, num_partitions=spec.data.num_partitions,
                        test_clients=spec.data.test_clients,
                        max_examples=spec.data.max_examples)
  num_clients = len(data.client_ids)
  if spec.num_clients == 0:  # the whole population: resolve what depends on its size
    spec = ExperimentSpec.from_config(config, population=num_clients)
  model = get_model(spec.model.name, num_classes=data.num_classes, width=spec.model.width)
  params = model.init(jax.random.fold_in(jax.random.key(spec.seed), 0x1417))
  num_params = int(sum(np.prod(a.shape) for a in jax.tree.leaves(params)))
  round_algorithm = build_round(spec, data, model, params, processes)
  pooled_fn = lambda x, y, c, idx: pooled_batch(data.kind, x, y, c, idx, seq_len=data.seq_len or 80)  # noqa: E731
  evaluator = evaluate_lib.PooledEvaluator(model.apply, pooled_fn, spec.eval_batch_size,
                                           data.test.valid)
  test_x, test_y, _ = _to_device(data.test)
  slow_devices = _population(spec).straggler

  state, start = round_algorithm.init(params), 0
  found = run_state.latest(out / "checkpoints") if checkpoints else None
  rows = _read_rows(out / "metrics.jsonl")
  if found is not None and len(rows) >= found[1]:
    state, start = run_state.restore(found[0], state)
  history = rows[:start]  # rows after the checkpoint are written again
  if start == spec.rounds and (out / "summary.json").exists():
    summary = json.loads((out / "summary.json").read_text())
    print(f"{out}: finished earlier ({start} rounds); not run again.")
    report.print_summary(summary, history)
    return summary
  (out / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
  progress = report.progress(spec.rounds, desc=f"{spec.data.name}/{spec.method}", start=start)
  with (out / "metrics.jsonl").open("a") as metrics_file:
    for r in progress:
      tick = time.perf_counter()
      state, row = round_algorithm.apply(state, r)
      cohort = np.asarray(row.get("cohort", np.arange(num_clients)), np.int64)
      row["true_stragglers"] = np.flatnonzero(slow_devices[cohort]).tolist()  # cohort positions
      if spec.eval_every and ((r + 1) % spec.eval_every == 0 or r + 1 == spec.rounds):
        eval_tick = time.perf_counter()
        row.update(evaluator(state.server.params, test_x, test_y).summary())
        row["host_seconds_eval"] = time.perf_counter() - eval_tick
      row["host_seconds"] = time.perf_counter() - tick
      metrics_file.write(json.dumps(row) + "\n")
      metrics_file.flush()
      history.append(row)
      report.update_progress(progress, row)
      if checkpoints and (r + 1 == spec.rounds or r + 1 == stop_after
                          or (spec.checkpoint_every and (r + 1) % spec.checkpoint_every == 0)):
        run_state.save(out / "checkpoints", state, r + 1)
      if r + 1 == stop_after:
        return None
  if checkpoints:
    report.save_checkpoint(out / "checkpoints" / "final", state.server.params)
  summary = report.summarize(spec, history, num_params=num_params, clients=num_clients)
  if spec.secagg.enabled:
    secagg_params = secagg.choose_parameters(spec.clients_per_round, **_key_setup_kwargs(spec))
    summary["secagg_parameters"] = secagg_params.as_dict()
    summary["aborted_rounds"] = sum("aborted" in row for row in history)
    summary["nonfinite_dropouts"] = sum(len(row.get("secagg_nonfinite", ())) for row in history)
  report.print_summary(summary, history)
  if spec.secagg.enabled:
    print(f"{secagg_params.describe()}\naborted rounds: {summary['aborted_rounds']}, "
          f"clients left out for non-finite updates: {summary['nonfinite_dropouts']}")
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary
