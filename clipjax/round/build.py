"""The wiring: a validated spec + its data + its model -> the round algorithm.

The one place that turns an `ExperimentSpec` into the objects a run uses: the data
(`load_data`), the model and its first parameters (`init_model`), the device population and
the tiers of the virtual clock, the SecAgg key-agreement arguments, and the round itself
(`build_round`). The loop (`clipjax.experiment`) and the scripts call these, so they cannot
drift apart.
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from clipjax import fluid as fluid_lib
from clipjax import methods, models, multihost, secagg
from clipjax.clip import histogram as histogram_lib
from clipjax.clip import keep as keep_lib
from clipjax.clip import reports as reports_lib
from clipjax.clock import charges as charges_lib
from clipjax.clock import devices
from clipjax.config_types import ExperimentSpec
from clipjax.data import example_batch, load_federated
from clipjax.fl import aggregation, local, training
from clipjax.fl import server as server_lib
from clipjax.models import flops, get_model
from clipjax.round import algorithm, chunks
from clipjax.round import settings as settings_lib

_MODEL_STREAM = 0x1417  # the model's initial parameters, apart from every other use of the seed


def load_data(spec: ExperimentSpec):
  """The run's federated data (`clipjax.data.load_federated`) as the spec asks for it."""
  d = spec.data
  return load_federated(d.name, num_clients=spec.num_clients or None, seed=spec.seed,
                        data_dir=d.data_dir, partition=d.partition, alpha=d.alpha,
                        num_partitions=d.num_partitions, test_clients=d.test_clients,
                        max_examples=d.max_examples)


def init_model(spec: ExperimentSpec, num_classes: int):
  """(model, initial parameters) of the run."""
  model = get_model(spec.model.name, num_classes=num_classes, width=spec.model.width)
  return model, model.init(jax.random.fold_in(jax.random.key(spec.seed), _MODEL_STREAM))


def mesh(spec: ExperimentSpec):
  """The devices a chunk's client axis is sharded over (None: one device, no sharding)."""
  if spec.scale.shard_devices <= 1:
    return None
  local_devices = jax.local_devices()[:spec.scale.shard_devices]
  return jax.sharding.Mesh(np.asarray(local_devices), ("clients",))


def tiers(spec: ExperimentSpec) -> devices.Tiers:
  """The public device tiers: fast and slow compute, the default network tiers."""
  d = spec.devices
  return devices.Tiers(compute={"fast": d.fast_flops, "slow": d.fast_flops * d.slow_compute_ratio})


def device_population(spec: ExperimentSpec) -> devices.Population:
  """Every client's device (DESIGN 2.1): the configured straggler counts, else the straggler
  fraction on the slow CPU."""
  d = spec.devices
  counts = {"compute": d.compute_slow, "network": d.network_slow, "both": d.both_slow}
  if sum(counts.values()) == 0:  # default: the straggler fraction, compute-slow
    return devices.make_population(spec.num_clients, straggler_fraction=spec.clip.straggler_fraction,
                                   seed=spec.seed, tiers=tiers(spec))
  return devices.make_population(spec.num_clients, counts=counts, seed=spec.seed, tiers=tiers(spec))


def key_agreement_kwargs(spec: ExperimentSpec) -> dict:
  """`secagg.setup_round` / `choose_parameters` arguments: (k, t) from Bell et al.'s analysis."""
  sa = spec.secagg
  threat = secagg.ThreatModel(sa.corruption_fraction, sa.analysed_dropout, sa.security_bits,
                              sa.correctness_bits)
  return dict(protocol=sa.protocol, degree=sa.degree, threshold=sa.threshold, threat=threat,
              allow_weak=sa.allow_weak_parameters)


def resolve_chunk(spec: ExperimentSpec, data, params) -> tuple[int, str]:
  """(clients per chunk, a line saying how auto chose it, "" when configured) for
  `scale.chunk_clients`.

  -1 (auto) picks the largest chunk whose estimated memory (`chunks.client_bytes`: the
  parameters' copies per client and its training data) fits `scale.memory_budget_gb`, or the
  backend's default budget (`chunks.default_budget_bytes`), rounded to the devices sharded over.
  """
  cohort = spec.clients_per_round
  if spec.scale.chunk_clients >= 0:
    return spec.scale.chunk_clients, ""
  num_params = models.num_params(params)
  train = data.train
  example_bytes = sum(np.asarray(a).nbytes for a in (train.x, train.y, train.valid))
  per_client = chunks.client_bytes(num_params, example_bytes // max(len(data.client_ids), 1))
  budget = (spec.scale.memory_budget_gb * 1e9 if spec.scale.memory_budget_gb > 0
            else chunks.default_budget_bytes())
  chunk = chunks.auto_chunk(cohort, per_client_bytes=per_client, budget_bytes=budget,
                            multiple=max(spec.scale.shard_devices, 1))
  return chunk, (f"chunk: {min(chunk, cohort)} of {cohort} clients (auto: ~{per_client / 1e6:.1f} "
                 f"MB a client, budget {budget / 1e9:.2f} GB; set scale.chunk_clients or "
                 "scale.memory_budget_gb to change it)")


def max_weight(spec: ExperimentSpec, weights: np.ndarray) -> float:
  """The public bound on a client's weight: `secagg.max_weight`, or with 0 (the default) the
  largest training-example count in the run's population (public in a simulation; a deployment
  would publish a bound)."""
  return float(spec.secagg.max_weight) or float(np.max(weights))


def _secure_settings(spec: ExperimentSpec, weights: np.ndarray, population: int):
  """SecAgg's quantisation settings, after checking the public bounds (None: SecAgg off).

  Raises:
    ValueError: for weights above an explicit `secagg.max_weight` or too many bits for the
      cohort.
  """
  sa = spec.secagg
  bound = max_weight(spec, weights)
  if spec.reports.rule == "plausible" and weights.max() > bound:
    raise ValueError(f"reports.rule='plausible' bounds a client's examples by the public "
                     f"secagg.max_weight={bound:g}, but a client has {weights.max():g}; "
                     "raise secagg.max_weight (or set it to 0: the population's largest).")
  if not sa.enabled:
    return None
  secagg.check_bits(spec.clients_per_round, sa.bits)
  try:  # a client above the public bound stops the run before any training
    secagg.weight_codes(weights, population, sa.bits, bound)
  except ValueError as e:
    raise ValueError(f"config.secagg.max_weight / training examples per client: {e} (0: the "
                     "population's largest)") from e
  planes = spec.clip.upload == "planes"  # resolved to padded for methods that decide nothing
  return aggregation.SecureSettings(bits=sa.bits, clip=sa.clip, max_weight=bound,
                                    high_bits=spec.clip.high_bits if planes else 0)


def build_round(spec: ExperimentSpec, data, model, params,
                processes: multihost.Processes = multihost.SINGLE,
                chunk: int | None = None) -> algorithm.Algorithm:
  """The round algorithm of `spec` on loaded `data` and `model` (validates SecAgg settings);
  `chunk` as `resolve_chunk` gives it (None: resolved here).

  Raises:
    ValueError: for SecAgg settings the client count or weights cannot meet, or `fluid` over
      several processes.
  """
  population = len(data.client_ids)
  method = methods.get_method(spec.method)
  devices_mesh = mesh(spec)
  batch_fn = lambda x, y, idx: example_batch(data.kind, x, y, idx, seq_len=data.seq_len or 80)  # noqa: E731
  optimizer = optax.sgd(spec.client_lr, momentum=spec.client_momentum or None)
  train = training.make_trainer(model.apply, batch_fn, optimizer,
                                local.LocalSpec(spec.local_epochs, spec.batch_size),
                                loop=spec.local_loop, client_batch=spec.client_batch,
                                mesh=devices_mesh)
  pruned_round = methods.make_pruned_round(method, model.unit_spec, train, growth=spec.clip.growth,
                                           slack=spec.clip.slack,
                                           threshold_init=spec.clip.threshold_init,
                                           importance_fn=(
                                               methods.make_importance(model.unit_spec,
                                                                       model.apply, batch_fn)
                                               if method.prune_rule == "taylor_oracle" else None),
                                           threshold_scale=spec.clip.threshold_scale)
  server_opt = server_lib.make_server_optimizer(spec.server_optimizer, spec.server_lr)
  weights = np.asarray(data.train.num_examples, np.float32)
  secure = _secure_settings(spec, weights, population)
  key_agreement = None  # pairwise keys serve SecAgg and the sealed time broadcast
  if spec.secagg.enabled or method.broadcasts:
    kwargs = key_agreement_kwargs(spec)
    secagg.choose_parameters(spec.clients_per_round, **kwargs)  # fails early on impossible (k, t)
    key_agreement = settings_lib.KeyAgreementSetting(
        kwargs=kwargs, dropout_rate=spec.secagg.dropout_rate, simulate=spec.secagg.simulate,
        verify_every=spec.secagg.verify_every, graph_randomness=spec.secagg.graph_randomness)
  if spec.secagg.enabled and spec.secagg.verify_every and processes.count > 1:
    raise ValueError(f"config.secagg.verify_every={spec.secagg.verify_every} needs one process "
                     "(it checks simulate=sum against the protocol on every client's update); "
                     f"with {processes.count} processes set it to 0.")
  if secure is not None and secure.high_bits and processes.count > 1:
    raise ValueError(f"config.clip.upload='planes' runs in one process (the low instance's "
                     f"keys are not handed out); with {processes.count} processes set "
                     "clip.upload='padded'.")
  fluid = None
  if method.prune_rule == "server_invariance":
    if processes.count > 1:
      raise ValueError("method 'fluid' reads every client's update on one server and does not "
                       "run over several processes; run it with --num_processes=1.")
    init, update = fluid_lib.make_server(model.unit_spec, spec.data.name, spec.rounds)
    fluid = settings_lib.FluidServer(init=init, update=update)
  clock = charges_lib.ClockModel.for_model(
      model, population=device_population(spec), num_examples=np.asarray(data.train.num_examples),
      epochs=spec.local_epochs, seed=spec.seed, jitter_sigma=spec.devices.jitter_sigma)
  table = keep_lib.make_flop_table(lambda p: flops.flop_fraction(model, p), p_min=spec.clip.min_keep,
                                   layer_sizes=model.width_dict)
  train_data = data.train  # host arrays: each round puts its cohort's chunks on the device(s)
  return algorithm.make_round(settings_lib.RoundSetting(
      method=method, unit_spec=model.unit_spec, pruned_round=pruned_round,
      aggregator=aggregation.make_aggregator(spec.clip.aggregation, params, secure),
      aggregation_rule=spec.clip.aggregation, secagg_on=spec.secagg.enabled,
      server=settings_lib.ServerSetting(
          init=lambda p: server_lib.server_init(p, server_opt),
          step=jax.jit(lambda st, d: server_lib.server_update(st, d, server_opt)),
          seconds=spec.devices.server_seconds,
          ops_per_s=spec.devices.server_speedup * spec.devices.fast_flops),
      clock=clock,
      keep=settings_lib.KeepSetting(spec.clip.straggler_fraction, table, spec.clip.rho_min,
                                    spec.clip.fixed_keep),
      key_agreement=key_agreement,
      data=settings_lib.ClientData(*(np.asarray(a) for a in (train_data.x, train_data.y,
                                                               train_data.valid)), weights),
      base_key=jax.random.key(spec.seed), seed=spec.seed, fluid=fluid,
      scorer=methods.make_scorer(model.unit_spec, spec.clip.score),
      scale=settings_lib.ScaleSetting(cohort=spec.clients_per_round,
                                      chunk=(resolve_chunk(spec, data, params)[0]
                                             if chunk is None else chunk), mesh=devices_mesh,
                                      processes=processes),
      reports=settings_lib.ReportSetting(
          liars=reports_lib.choose_liars(spec.seed, population, spec.reports.liar_fraction),
          factor=spec.reports.liar_factor, rule=spec.reports.rule, tiers=tiers(spec),
          max_examples=max_weight(spec, weights), jitter_sigma=spec.devices.jitter_sigma,
          sigmas=spec.reports.bound_sigmas,
          # Only methods whose clients decide from their peers' times read the histograms.
          histogram=(histogram_lib.edges(spec.clip.histogram_bins, spec.clip.histogram_lo_s,
                                         spec.clip.histogram_hi_s)
                     if spec.clip.straggler_info == "histogram" and method.broadcasts
                     else None),
          in_share_keys=spec.clip.broadcast == "share_keys"),
      reference=spec.clip.reference, unavailable_rate=spec.unavailable_rate))
