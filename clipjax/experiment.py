"""`run(config, workdir)`: the one loop that owns every side effect of an experiment.

Per round: (1) clients exchange sealed time reports through the server and each decides its
keep fraction (from round 2, pruning methods only); (2) one jitted, vmapped computation
builds every client's unit masks and trains it; (3) the deltas are summed by SecAgg(+) or
in the clear; (4) the server optimiser steps; (5) the virtual clock charges each client for
what it really did. The loop alone reads the clock, writes `metrics.jsonl`, evaluates,
checkpoints and prints.
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
from jax.flatten_util import ravel_pytree

from clipjax import broadcast, methods, report, secagg
from clipjax import virtual_clock as clock_lib
from clipjax.clip import devices
from clipjax.clip import keep as keep_lib
from clipjax.config_types import ExperimentSpec
from clipjax.data import example_batch, load_federated, pooled_batch
from clipjax.fl import evaluate as evaluate_lib
from clipjax.fl import local
from clipjax.fl import round as round_lib
from clipjax.fl import server as server_lib
from clipjax.fl import training
from clipjax.models import flops, get_model


def _to_device(arrays) -> tuple[jax.Array, jax.Array, jax.Array]:
  return jnp.asarray(arrays.x), jnp.asarray(arrays.y), jnp.asarray(arrays.valid)


def _population(spec: ExperimentSpec) -> devices.Population:
  d = spec.devices
  fast = d.fast_flops or devices.FAST_FLOPS_PER_S
  tiers = devices.Tiers(compute={"fast": fast, "slow": fast * d.slow_compute_ratio})
  counts = {"compute": d.compute_slow, "network": d.network_slow, "both": d.both_slow}
  if sum(counts.values()) == 0:  # default: the straggler fraction, compute-slow
    return devices.make_population(spec.num_clients, straggler_fraction=spec.clip.straggler_fraction,
                                   seed=spec.seed, tiers=tiers)
  return devices.make_population(spec.num_clients, counts=counts, seed=spec.seed, tiers=tiers)


def run(config, workdir: str) -> dict[str, Any]:
  """Runs one experiment; returns its summary (also printed as a table).

  Args:
    config: an `ml_collections.ConfigDict` (see `configs/base.py` for every key).
    workdir: output folder: config.json, metrics.jsonl, checkpoint/.

  Raises:
    ValueError: for any bad config value or missing data, with what to fix.
  """
  spec = ExperimentSpec.from_config(config)
  out = pathlib.Path(workdir)
  out.mkdir(parents=True, exist_ok=True)
  (out / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))

  data = load_federated(spec.data.name, num_clients=spec.num_clients, seed=spec.seed,
                        data_dir=spec.data.data_dir, partition=spec.data.partition,
                        alpha=spec.data.alpha, num_partitions=spec.data.num_partitions)
  num_clients = len(data.client_ids)
  model = get_model(spec.model.name, num_classes=data.num_classes, width=spec.model.width)
  base_key = jax.random.key(spec.seed)
  params = model.init(jax.random.fold_in(base_key, 0x1417))
  num_params = int(sum(np.prod(a.shape) for a in jax.tree.leaves(params)))
  batch_fn = lambda x, y, idx: example_batch(data.kind, x, y, idx, seq_len=data.seq_len or 80)  # noqa: E731

  optimizer = optax.sgd(spec.client_lr, momentum=spec.client_momentum or None)
  client_batch = (training.default_client_batch(spec.model.name) if spec.client_batch < 0
                  else spec.client_batch)
  train = training.make_trainer(model.apply, batch_fn, optimizer,
                                local.LocalSpec(spec.local_epochs, spec.batch_size),
                                loop=spec.local_loop, client_batch=client_batch)
  server_opt = server_lib.make_server_optimizer(spec.server_optimizer, spec.server_lr)
  state = server_lib.server_init(params, server_opt)
  participation = spec.clip.aggregation == "participation_weighted"
  method_spec = methods.MethodSpec(spec.method, spec.clip.growth, spec.clip.slack,
                                   want_param_masks=participation)
  pruned_round = methods.make_pruned_round(method_spec, model.unit_spec, train)
  plain_mean = jax.jit(server_lib.participation_mean if participation else server_lib.weighted_mean)
  plain_weighted = jax.jit(server_lib.weighted_mean)
  server_step = jax.jit(lambda s, d: server_lib.server_update(s, d, server_opt), donate_argnums=0)
  pooled_fn = lambda x, y, c, idx: pooled_batch(data.kind, x, y, c, idx, seq_len=data.seq_len or 80)  # noqa: E731
  evaluator = evaluate_lib.PooledEvaluator(model.apply, pooled_fn, spec.eval_batch_size,
                                           data.test.valid)
  _, unravel = ravel_pytree(params)
  ravel_clients = jax.jit(jax.vmap(lambda t: ravel_pytree(t)[0]))

  x, y, valid = _to_device(data.train)
  test_x, test_y, _ = _to_device(data.test)
  weights = np.asarray(data.train.num_examples, np.float32)
  client_ids = jnp.arange(num_clients)
  clip_state = methods.init_clip_state(model.unit_spec, num_clients)
  prunes = spec.method in methods.PRUNING_METHODS
  rule = "clip_network" if spec.method == "clip_network" else "clip_compute"
  table = keep_lib.make_flop_table(lambda p: flops.flop_fraction(model, p), p_min=spec.clip.min_keep,
                                   layer_sizes=model.width_dict)
  population = _population(spec)
  clock = clock_lib.ClockModel(
      population=population, model=model, num_params=num_params,
      num_examples=np.asarray(data.train.num_examples), epochs=spec.local_epochs, seed=spec.seed,
      jitter_sigma=spec.devices.jitter_sigma, server_seconds=spec.devices.server_seconds,
      secagg=spec.secagg.enabled, upload_vectors=2 if participation else 1)
  # Pairwise keys serve SecAgg and the sealed time broadcast (fluid's server sees times).
  need_keys = spec.secagg.enabled or (prunes and spec.method != "fluid")
  threat = secagg.ThreatModel(  # the analysis covers at least the injected drop-out rate
      spec.secagg.corruption_fraction, max(spec.secagg.dropout_fraction, spec.secagg.dropout_rate),
      spec.secagg.security_bits, spec.secagg.correctness_bits)
  secagg_kwargs = dict(protocol=spec.secagg.protocol, degree=spec.secagg.degree,
                       threshold=spec.secagg.threshold, threat=threat,
                       allow_weak=spec.secagg.allow_weak_parameters)
  secagg_params = secagg.choose_parameters(num_clients, **secagg_kwargs) if need_keys else None
  secagg_bits = spec.secagg.bits or secagg.max_safe_bits(num_clients)
  if spec.secagg.enabled:  # a client above the public bound stops the run before any training
    secagg.check_bits(num_clients, secagg_bits)
    try:
      secagg.weight_codes(weights, num_clients, secagg_bits, spec.secagg.max_weight)
    except ValueError as e:
      raise ValueError(f"config.secagg.max_weight / training examples per client: {e}") from e

  def evaluate_into(row):  # on evaluation rounds (and the last), aborted or not
    if spec.eval_every and ((r + 1) % spec.eval_every == 0 or r + 1 == spec.rounds):
      eval_tick = time.perf_counter()
      row.update(evaluator(state.params, test_x, test_y).summary())
      row["host_seconds_eval"] = time.perf_counter() - eval_tick

  def record_abort(row, err, times, tick):  # the model is unchanged; the clock is charged
    nonlocal virtual_time
    round_s = secagg.aborted_round_seconds(times, err, spec.devices.server_seconds)
    virtual_time += round_s
    row.update({"aborted": str(err), "aborted_stage": err.stage,
                "aborted_participants": list(err.participants), "train_loss": float("nan"),
                "secagg_nonfinite": list(err.nonfinite),
                "secagg_too_few_holders": list(err.too_few_holders),
                "round_time_s": round_s, "virtual_time_s": virtual_time, "stragglers": [],
                "keep_fraction": []})
    evaluate_into(row)
    row["host_seconds"] = time.perf_counter() - tick
    metrics_file.write(json.dumps(row) + "\n")
    metrics_file.flush()
    history.append(row)
    report.update_progress(progress, row)

  last_times = None
  score_reference = state.params
  virtual_time = 0.0
  history = []
  progress = report.progress(spec.rounds, desc=f"{spec.data.name}/{spec.method}")
  with (out / "metrics.jsonl").open("w") as metrics_file:
    for r in progress:
      tick = time.perf_counter()
      row: dict[str, Any] = {"round": r + 1}
      round_seed = spec.seed * 1_000_003 + r
      dropouts = secagg.Dropouts(rate=spec.secagg.dropout_rate) if spec.secagg.enabled else None
      try:
        setup = (secagg.setup_round(num_clients, seed=round_seed, round_index=r, dropouts=dropouts,
                                    **secagg_kwargs) if need_keys else None)
      except secagg.RoundAborted as e:  # too few keys advertised: the round ends before training
        full = {k: np.full(num_clients, v) for k, v in model.width_dict.items()}
        record_abort(row, e, clock.times(r, full, 0), tick)
        continue
      # (1) straggler self-identification and keep fractions.
      is_straggler = np.zeros(num_clients, bool)
      keep = np.ones(num_clients, np.float32)
      if prunes and last_times is not None:
        if setup is not None:
          alive = np.isin(np.arange(num_clients), setup.advertised)
          known, relay = broadcast.exchange_time_reports(setup, last_times.fit_full,
                                                         last_times.report_net, alive)
          row["broadcast_bytes"] = relay.bytes_relayed
        else:  # fluid: the server sees every client's times in the clear
          known = broadcast.KnownTimes(
              fit=np.tile(last_times.fit_full, (num_clients, 1)),
              net=np.tile(last_times.report_net, (num_clients, 1)),
              valid=~np.eye(num_clients, dtype=bool))
        is_straggler, keep = broadcast.decide_keep_fractions(
            known, last_times.fit_full, last_times.report_net,
            straggler_fraction=spec.clip.straggler_fraction, rule=rule, table=table,
            rho_min=spec.clip.rho_min)
      # (2) masks (one jitted computation) and local training for every client; blocked
      # on, so the host seconds of training and SecAgg are each their own.
      keys = round_lib.client_keys(base_key, jnp.int32(r), client_ids)
      reference = score_reference if spec.method == "fluid" else state.prev_params
      train_tick = time.perf_counter()
      trained = jax.block_until_ready(pruned_round(state.params, reference, clip_state,
                                                   jnp.asarray(keep), keys, x, y, valid))
      row["host_seconds_train"] = time.perf_counter() - train_tick
      clip_state = trained.clip_state
      # (3) aggregation.
      survivors = np.ones(num_clients, bool)
      prg_streams = 0
      if spec.secagg.enabled:
        secagg_tick = time.perf_counter()
        flat = ravel_clients(trained.delta)
        if participation:
          flat = jnp.concatenate([flat, ravel_clients(trained.param_prune_mask)], axis=1)
        prg_streams = np.asarray([1 + len(setup.neighbours(u)) for u in range(num_clients)])
        try:
          result = secagg.secure_sum(
              flat, weights, max_weight=spec.secagg.max_weight, setup=setup, bits=secagg_bits,
              clip=spec.secagg.clip or 1.0, keep_transcript_inputs=False)
        except secagg.RoundAborted as e:  # too few survivors: the round leaves the model as is
          kept = {k: np.asarray(v) for k, v in jax.device_get(trained.kept_units).items()}
          last_times = clock.times(r, kept, prg_streams)  # the clients did train
          record_abort(row, e, last_times, tick)
          continue
        survivors = np.asarray(result.survivors, bool)
        total = jnp.asarray(result.total)
        if participation:
          num, den = total[:num_params], total[num_params:]
          mean_flat = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
        else:
          mean_flat = total / max(float(result.weight_total), 1e-12)
        mean_delta = jax.block_until_ready(unravel(mean_flat))
        row["host_seconds_secagg"] = time.perf_counter() - secagg_tick
        row.update(report.secagg_row(result))
        row["secagg_nonfinite"] = list(result.nonfinite)  # left out as drop-outs, and logged
        row["secagg_too_few_holders"] = list(result.too_few_holders)
      elif participation:
        mean_delta = plain_mean(trained.delta, jnp.asarray(weights), trained.param_prune_mask)
      else:
        mean_delta = plain_mean(trained.delta, jnp.asarray(weights))
      if spec.method == "fluid":  # server-side scores from non-stragglers' individual updates
        ref_weights = jnp.asarray(weights * (~is_straggler))
        ref_delta = plain_weighted(trained.delta, ref_weights)
      state = server_step(state, mean_delta)
      if spec.method == "fluid":
        score_reference = jax.tree.map(jnp.add, state.params, ref_delta)
      # (4) the virtual clock.
      kept = {k: np.asarray(v) for k, v in jax.device_get(trained.kept_units).items()}
      times = clock.times(r, kept, prg_streams)
      round_s = devices.round_time(times, survivors, spec.devices.server_seconds)
      virtual_time += round_s
      last_times = times
      host = jax.device_get({"loss": trained.loss_sum, "seen": trained.num_seen,
                             "inv": trained.invariant_units, "slack": trained.slack_units})
      row.update({
          "train_loss": float(np.sum(host["loss"]) / max(np.sum(host["seen"]), 1.0)),
          "round_time_s": round_s, "virtual_time_s": virtual_time,
          "stragglers": np.flatnonzero(is_straggler).tolist(),
          "true_stragglers": np.flatnonzero(population.straggler).tolist(),
          "keep_fraction": [round(float(p), 4) for p in keep],
          "invariant_units": np.asarray(host["inv"]).tolist(),
          "slack_units": np.asarray(host["slack"]).tolist(),
          "fit_s": np.round(times.fit, 4).tolist(), "client_time_s": np.round(times.total, 4).tolist(),
      })
      evaluate_into(row)
      row["host_seconds"] = time.perf_counter() - tick
      metrics_file.write(json.dumps(row) + "\n")
      metrics_file.flush()
      history.append(row)
      report.update_progress(progress, row)
      if spec.checkpoint_every and (r + 1) % spec.checkpoint_every == 0:
        report.save_checkpoint(out / "checkpoints" / f"round_{r + 1}", state.params)
  report.save_checkpoint(out / "checkpoints" / "final", state.params)
  summary = report.summarize(spec, history, num_params=num_params, clients=num_clients)
  if spec.secagg.enabled:
    summary["secagg_parameters"] = secagg_params.as_dict()
    summary["aborted_rounds"] = sum("aborted" in row for row in history)
    summary["nonfinite_dropouts"] = sum(len(row.get("secagg_nonfinite", ())) for row in history)
  report.print_summary(summary, history)
  if spec.secagg.enabled:
    print(f"{secagg_params.describe()}\naborted rounds: {summary['aborted_rounds']}, "
          f"clients left out for non-finite updates: {summary['nonfinite_dropouts']}")
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary
