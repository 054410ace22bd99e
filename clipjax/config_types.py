"""Typed, validated experiment settings: the loop's only reader of a ConfigDict.

Library code never sees an `ml_collections.ConfigDict`; `ExperimentSpec.from_config`
unpacks one into frozen dataclasses and rejects bad values with a `ValueError` that names
the key, the value and what is allowed.

Every key has one default, in `configs/base.py`, which every config starts from; a config
without a key is an error here, not a second default. What a default depends on is resolved
here, once: a value of 0 / -1 / "auto" in the config becomes the concrete value the run uses
(quantisation bits for n clients, the device tier, the client batch for the backend, the
method's aggregation rule), so the rest of the code never re-derives a default.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax

from clipjax.clock import calibration as calibration_lib
from clipjax.clip.histogram import STRAGGLER_INFOS
from clipjax.clip.histogram import edges as histogram_edges
from clipjax.clip.histogram import resolve as resolve_straggler_info
from clipjax.clip.invariance import SLACK_ORDERS, THRESHOLD_INITS
from clipjax.clip.reports import REPORT_RULES
from clipjax.data import DATASETS
from clipjax.data.federated import TEST_CLIENTS
from clipjax.fl import training
from clipjax.fl.aggregation import AGGREGATIONS
from clipjax.fl.server import SERVER_OPTIMIZERS
from clipjax.methods import METHODS
from clipjax.models import KNOWN_MODELS
from clipjax.models.units import SCORES
from clipjax.clip.invariance import REFERENCES
from clipjax.secagg import max_safe_bits
from clipjax.secagg.graph import GRAPH_RANDOMNESS
from clipjax.secagg.params import PROTOCOLS
from clipjax.secagg.planes import UPLOADS
from clipjax.secagg.planes import check_high_bits
from clipjax.secagg.protocol import SIMULATE

# How the time reports travel (DESIGN 2.2): inside SecAgg's ShareKeys ciphertexts, or in a
# message of their own; `auto`: share_keys under SecAgg, own_message without it.
BROADCASTS = ("auto", "share_keys", "own_message")
DEFAULT_SECAGG_CLIP = 1.0  # quantisation range [-1, 1] of each weighted coordinate

# Config keys added after runs were stored, with the value that reproduces those runs: a stored
# config.json without such a key is the same run as a config holding this value.
ADDED_KEYS = {"data.max_examples": 0, "scale.memory_budget_gb": 0.0,
              # issue 27: runs stored before them heard their neighbours' reports
              "clip.straggler_info": "neighbours", "clip.histogram_bins": 256,
              "clip.histogram_lo_s": 0.01, "clip.histogram_hi_s": 10000.0,
              # issue 24: runs stored before it charged the server no work and sent the
              # reports in a message of their own
              "devices.server_speedup": 0.0, "clip.broadcast": "own_message",
              # issue 24 item 7: the SecAgg+ graph was drawn from the round's seed alone
              "secagg.graph_randomness": "seed",
              # issue 25: stragglers kept what their keep rule gave them
              "clip.fixed_keep": 0.0, "clip.threshold_scale": 1.0,
              # issue 26: every SecAgg upload was the padded full-precision vector
              "clip.upload": "padded", "clip.high_bits": 12}
# Layout-only keys: they change where and how many clients are trained at once, or how the
# simulator computes the secure sum's exact output, not what is computed (up to float summation
# order), so a stored run with other values is the same run (and may resume under them).
LAYOUT_KEYS = ("scale.chunk_clients", "scale.memory_budget_gb", "secagg.simulate",
               "secagg.verify_every")
# Keys a method never reads: a stored run of a method with other values of them is the same
# run, so changing a CLIP default does not send a sweep's references to be run again. Keys of
# how clients learn their peers' times, read only by methods that broadcast
# (`Method.broadcasts`: not `fedavg`, `fluid`), and of CLIP's client-side invariance, read
# only by `prune_rule="client_invariance"` (not `fedavg`, `random`, `ordered`, `fluid`).
BROADCAST_KEYS = ("clip.straggler_info", "clip.histogram_bins", "clip.histogram_lo_s",
                  "clip.histogram_hi_s", "clip.broadcast", "clip.upload", "clip.high_bits")
INVARIANCE_KEYS = ("clip.score", "clip.threshold_init", "clip.growth", "clip.slack",
                   "clip.threshold_scale")
# Keys of the pairwise key agreement, read only by runs that agree keys (SecAgg, or a method
# that broadcasts its time reports).
KEY_AGREEMENT_KEYS = ("secagg.graph_randomness",)


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _comparable(stored_json: str, config) -> tuple[dict, dict] | None:
  """(stored, asked) flat config dicts, read as `same_run_config` compares them (stored keys
  of `ADDED_KEYS` filled in, `LAYOUT_KEYS` set aside); None when the stored text is not JSON."""
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  try:
    stored, asked = _flat(json.loads(stored_json)), _flat(json.loads(text))
  except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
    return None
  for key, value in ADDED_KEYS.items():
    if key not in stored and asked.get(key) == value:
      asked.pop(key)
  for key in (*LAYOUT_KEYS, *unread_keys(asked.get("method"),
                                          bool(asked.get("secagg.enabled", True)))):
    stored.pop(key, None)
    asked.pop(key, None)
  return stored, asked


def unread_keys(method: str, secagg_enabled: bool = True) -> tuple[str, ...]:
  """The config keys `method` never reads (`BROADCAST_KEYS`, `INVARIANCE_KEYS`, and
  `KEY_AGREEMENT_KEYS` when it agrees no keys: no SecAgg, no broadcast); none for an unknown
  method."""
  if method not in METHODS:
    return ()
  m = METHODS[method]
  return ((() if m.broadcasts else BROADCAST_KEYS)
          + (() if m.prune_rule == "client_invariance" else INVARIANCE_KEYS)
          + (() if secagg_enabled or m.broadcasts else KEY_AGREEMENT_KEYS))


def same_run_config(stored_json: str, config) -> bool:
  """Whether a workdir's stored `config.json` text describes the run `config` asks for.

  Equal JSON, or equal once keys of `ADDED_KEYS` that the stored file lacks are read at the
  value they had before they existed (runs stored earlier stay finished / resumable) and the
  layout-only `LAYOUT_KEYS` are set aside.
  """
  if stored_json == config.to_json_best_effort(indent=2, sort_keys=True):
    return True
  pair = _comparable(stored_json, config)
  return pair is not None and pair[0] == pair[1]


def other_rounds(stored_json: str, config) -> int | None:
  """The stored run's `rounds` when `config` asks for that run with another number of rounds
  (every other key the same, as `same_run_config` reads them); None otherwise.

  Whether such a run may be extended or shortened is the loop's decision
  (`clipjax.experiment`): it depends on the method and on the rounds already written.
  """
  pair = _comparable(stored_json, config)
  if pair is None:
    return None
  stored, asked = pair
  old, new = stored.pop("rounds", None), asked.pop("rounds", None)
  if stored != asked or old == new or not isinstance(old, int) or isinstance(old, bool):
    return None
  return old


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
  if value not in allowed:
    raise ValueError(f"config.{key}={value!r} is not allowed; choose one of {allowed}.")
  return value


def _positive(key: str, value, *, allow_zero: bool = False):
  if value < 0 or (value == 0 and not allow_zero):
    bound = ">= 0" if allow_zero else "> 0"
    raise ValueError(f"config.{key}={value!r} must be {bound}.")
  return value


def _client_batch(value: int, model: str) -> int:
  if value < -1:
    raise ValueError(f"config.client_batch={value!r} must be -1 (the measured default for the "
                     "model and backend), 0 (all clients at once) or a chunk size k > 0.")
  if value == -1:
    return training.default_client_batch(model, jax.default_backend())
  return value


def _aggregation(value: str, method: str) -> str:
  """"auto": the method's own rule; a method that prunes nothing always averages padded."""
  allowed = ("auto",) + AGGREGATIONS
  _choice("clip.aggregation", value, allowed)
  if method not in METHODS:
    return value  # the method itself is rejected below with its own message
  if value == "auto" or not METHODS[method].prunes:
    return METHODS[method].aggregation
  return value


def _chunk_clients(value: int) -> int:
  if value < -1:
    raise ValueError(f"config.scale.chunk_clients={value} must be -1 (auto: the largest chunk that "
                     "fits scale.memory_budget_gb), 0 (the whole cohort) or a client count.")
  return value


def _shard_devices(value: int) -> int:
  available = jax.local_device_count()  # each process shards its chunks over its own devices
  if value < 0 or value > available:
    raise ValueError(f"config.scale.shard_devices={value} must be in [0, {available}] (0: all "
                     f"{available} local devices JAX sees; on CPU, more come from XLA_FLAGS="
                     "--xla_force_host_platform_device_count=N set before JAX starts).")
  return value or available


def _fraction(key: str, value: float, lo: float = 0.0, hi: float = 1.0, hi_open: bool = False):
  if not (lo <= value <= hi) or (hi_open and value == hi):
    right = ")" if hi_open else "]"
    raise ValueError(f"config.{key}={value!r} must lie in [{lo}, {hi}{right}.")
  return float(value)


def _get(config, path: str):
  """The value at a dotted `path` of `config`; configs/base.py holds every key and its default.

  Raises:
    ValueError: for a key the config does not have.
  """
  node = config
  for part in path.split("."):
    if part not in node:
      raise ValueError(f"config.{path} is missing; build configs from configs/base.py's "
                       "get_config(), which holds every key with its default.")
    node = node[part]
  return node


@dataclasses.dataclass(frozen=True)
class DataSpec:
  name: str
  data_dir: str | None
  partition: str
  alpha: float
  num_partitions: int | None
  test_clients: str
  max_examples: int = 0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  name: str
  width: float


@dataclasses.dataclass(frozen=True)
class SecAggSpec:
  enabled: bool
  protocol: str
  degree: int | None
  threshold: int | None
  bits: int
  clip: float
  dropout_rate: float
  max_weight: float
  corruption_fraction: float
  dropout_fraction: float
  security_bits: int
  correctness_bits: int
  allow_weak_parameters: bool
  simulate: str       # `protocol`, or `sum`: its exact result without keys or masks
  verify_every: int   # run both and compare every this many rounds; 0: never
  graph_randomness: str = "committed"  # SecAgg+ graph from the clients' commitments, or seed

  @property
  def analysed_dropout(self) -> float:
    """The drop-out fraction the (k, t) analysis covers: at least the injected rate."""
    return max(self.dropout_fraction, self.dropout_rate)


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  straggler_fraction: float
  min_keep: float
  rho_min: float | None
  growth: float
  slack: str
  score: str
  threshold_init: str
  aggregation: str
  reference: str
  straggler_info: str
  broadcast: str  # share_keys | own_message (resolved from auto)
  histogram_bins: int
  histogram_lo_s: float
  histogram_hi_s: float
  fixed_keep: float | None = None  # every straggler keeps this p (None: its keep rule's p)
  threshold_scale: float = 1.0  # invariant: score <= threshold x this (issue 25)
  upload: str = "padded"  # padded | planes: network stragglers send the high bit plane only
  high_bits: int = 12  # planes: bits of the high plane (issue 26)


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
  compute_slow: int
  network_slow: int
  both_slow: int
  jitter_sigma: float
  fast_flops: float
  slow_compute_ratio: float
  server_seconds: float
  server_speedup: float  # the server's ops/s / the fast tier's; 0: no server work charged
  calibration: str


@dataclasses.dataclass(frozen=True)
class ReportSpec:
  """Time reports (DESIGN 2.2), clients that lie in them, and the straggler decision rule."""

  liar_fraction: float
  liar_factor: float
  rule: str
  bound_sigmas: float


@dataclasses.dataclass(frozen=True)
class ScaleSpec:
  """How a round's cohort is laid out on the hardware (DESIGN 2.9); results do not depend on
  it beyond float summation order."""

  chunk_clients: int   # clients trained and summed at once; 0: the whole cohort; -1: auto
  shard_devices: int   # devices the chunk's client axis is sharded over; 1: no sharding
  memory_budget_gb: float  # the auto chunk's memory budget; 0: the backend's default


def _secagg_spec(g, summands: int) -> SecAggSpec:
  secagg = SecAggSpec(
      enabled=bool(g("secagg.enabled")),
      protocol=_choice("secagg.protocol", g("secagg.protocol"), PROTOCOLS),
      degree=int(g("secagg.degree")) or None,
      threshold=int(g("secagg.threshold")) or None,
      bits=int(g("secagg.bits")) or max_safe_bits(summands),
      clip=float(g("secagg.clip")) or DEFAULT_SECAGG_CLIP,
      dropout_rate=_fraction("secagg.dropout_rate", g("secagg.dropout_rate"), hi_open=True),
      max_weight=float(_positive("secagg.max_weight", float(g("secagg.max_weight")),
                                 allow_zero=True)),
      corruption_fraction=_fraction("secagg.corruption_fraction",
                                    g("secagg.corruption_fraction"), hi_open=True),
      dropout_fraction=_fraction("secagg.dropout_fraction", g("secagg.dropout_fraction"),
                                 hi_open=True),
      security_bits=int(_positive("secagg.security_bits", int(g("secagg.security_bits")))),
      correctness_bits=int(_positive("secagg.correctness_bits",
                                     int(g("secagg.correctness_bits")))),
      allow_weak_parameters=bool(g("secagg.allow_weak_parameters")),
      simulate=_choice("secagg.simulate", g("secagg.simulate"), SIMULATE),
      graph_randomness=_choice("secagg.graph_randomness", g("secagg.graph_randomness"),
                               GRAPH_RANDOMNESS),
      verify_every=int(_positive("secagg.verify_every", int(g("secagg.verify_every")),
                                 allow_zero=True)),
  )
  if not secagg.max_weight < float("inf"):
    raise ValueError(f"config.secagg.max_weight={secagg.max_weight!r} must be finite.")
  if secagg.corruption_fraction + max(secagg.dropout_fraction, secagg.dropout_rate) >= 1:
    raise ValueError(f"config.secagg.corruption_fraction={secagg.corruption_fraction} plus the "
                     f"drop-out fraction {max(secagg.dropout_fraction, secagg.dropout_rate)} "
                     "(the larger of secagg.dropout_fraction and secagg.dropout_rate) must be "
                     "below 1.")
  return secagg


def _check_planes(spec) -> None:
  """`clip.upload=planes` needs SecAgg, the summed time histograms, the padded rule and
  `clip.high_bits` below `secagg.bits` (issue 26)."""
  if not spec.secagg.enabled:
    raise ValueError("config.clip.upload='planes' splits the SecAgg upload into two bit planes, "
                     "and SecAgg is off; turn config.secagg.enabled on or use "
                     "clip.upload='padded'.")
  if spec.clip.straggler_info != "histogram":
    raise ValueError("config.clip.upload='planes': network stragglers decide from the summed "
                     "time histograms before the round's first message; set "
                     "clip.straggler_info='histogram' (or 'auto').")
  if spec.clip.aggregation != "padded":
    raise ValueError(f"config.clip.upload='planes' runs with the padded aggregation rule, not "
                     f"{spec.clip.aggregation!r}; set clip.aggregation='padded' (or 'auto').")
  try:
    check_high_bits(spec.clip.high_bits, spec.secagg.bits)
  except ValueError as e:
    raise ValueError(f"config.{e}") from None


def _clip_spec(g) -> ClipSpec:
  clip = ClipSpec(
      straggler_fraction=_fraction("clip.straggler_fraction",
                                   g("clip.straggler_fraction"), hi_open=True),
      min_keep=_fraction("clip.min_keep", g("clip.min_keep"), lo=1e-3),
      rho_min=(float(g("clip.rho_min")) or None),
      growth=float(g("clip.growth")),
      slack=_choice("clip.slack", g("clip.slack"), SLACK_ORDERS),
      score=_choice("clip.score", g("clip.score"), SCORES),
      threshold_init=_choice("clip.threshold_init", g("clip.threshold_init"),
                             THRESHOLD_INITS),
      aggregation=_aggregation(g("clip.aggregation"), g("method")),
      reference=_choice("clip.reference", g("clip.reference"), REFERENCES),
      straggler_info=_choice("clip.straggler_info", g("clip.straggler_info"),
                             STRAGGLER_INFOS),
      broadcast=_choice("clip.broadcast", g("clip.broadcast"), BROADCASTS),
      histogram_bins=int(g("clip.histogram_bins")),
      histogram_lo_s=float(g("clip.histogram_lo_s")),
      histogram_hi_s=float(g("clip.histogram_hi_s")),
      fixed_keep=(_fraction("clip.fixed_keep", float(g("clip.fixed_keep"))) or None),
      threshold_scale=float(_positive("clip.threshold_scale", float(g("clip.threshold_scale")))),
      upload=_choice("clip.upload", g("clip.upload"), UPLOADS),
      high_bits=g("clip.high_bits"),
  )
  try:
    histogram_edges(clip.histogram_bins, clip.histogram_lo_s, clip.histogram_hi_s)
  except ValueError as e:
    raise ValueError(f"config.clip.histogram_bins/histogram_lo_s/histogram_hi_s: {e}") from None
  if clip.growth <= 1.0:
    raise ValueError(f"config.clip.growth={clip.growth!r} must be > 1 so thresholds can grow.")
  if clip.rho_min is not None:
    _fraction("clip.rho_min", clip.rho_min, lo=1e-6)
  return clip


def _device_spec(g) -> DeviceSpec:
  calibration = _choice("devices.calibration", g("devices.calibration"),
                        calibration_lib.CALIBRATIONS)
  devices = DeviceSpec(
      compute_slow=int(_positive("devices.compute_slow", g("devices.compute_slow"), allow_zero=True)),
      network_slow=int(_positive("devices.network_slow", g("devices.network_slow"), allow_zero=True)),
      both_slow=int(_positive("devices.both_slow", g("devices.both_slow"), allow_zero=True)),
      jitter_sigma=float(_positive("devices.jitter_sigma", g("devices.jitter_sigma"), allow_zero=True)),
      fast_flops=float(_positive("devices.fast_flops", g("devices.fast_flops"),
                                 allow_zero=True)) or calibration_lib.fast_flops(
                                     calibration, g("model.name"), float(g("model.width"))),
      slow_compute_ratio=_fraction("devices.slow_compute_ratio",
                                   g("devices.slow_compute_ratio"), lo=1e-3),
      server_seconds=float(_positive("devices.server_seconds", g("devices.server_seconds"), allow_zero=True)),
      server_speedup=float(_positive("devices.server_speedup", float(g("devices.server_speedup")),
                                     allow_zero=True)),
      calibration=calibration,
  )
  return devices


def _report_spec(g) -> ReportSpec:
  reports = ReportSpec(
      liar_fraction=_fraction("reports.liar_fraction", g("reports.liar_fraction")),
      liar_factor=float(_positive("reports.liar_factor", float(g("reports.liar_factor")))),
      rule=_choice("reports.rule", g("reports.rule"), REPORT_RULES),
      bound_sigmas=float(_positive("reports.bound_sigmas",
                                   float(g("reports.bound_sigmas")))),
  )
  return reports


def _scale_spec(g) -> ScaleSpec:
  return ScaleSpec(
      chunk_clients=_chunk_clients(int(g("scale.chunk_clients"))),
      shard_devices=_shard_devices(int(g("scale.shard_devices"))),
      memory_budget_gb=float(_positive("scale.memory_budget_gb",
                                       float(g("scale.memory_budget_gb")), allow_zero=True)))


def _data_spec(g) -> DataSpec:
  return DataSpec(
      name=_choice("data.name", g("data.name"), DATASETS),
      data_dir=g("data.data_dir") or None,
      partition=_choice("data.partition", g("data.partition"), ("iid", "dirichlet")),
      alpha=float(_positive("data.alpha", float(g("data.alpha")))),
      num_partitions=int(_positive("data.num_partitions", int(g("data.num_partitions")),
                                   allow_zero=True)) or None,
      test_clients=_choice("data.test_clients", g("data.test_clients"), TEST_CLIENTS),
      max_examples=int(_positive("data.max_examples", int(g("data.max_examples")),
                                 allow_zero=True)))


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """Everything one run needs, validated."""

  seed: int
  rounds: int
  num_clients: int
  local_epochs: int
  batch_size: int
  client_lr: float
  client_momentum: float
  server_optimizer: str
  server_lr: float
  eval_every: int
  eval_batch_size: int
  cohort_size: int | None
  unavailable_rate: float
  scale: ScaleSpec
  method: str
  checkpoint_every: int
  client_batch: int
  local_loop: str
  data: DataSpec
  model: ModelSpec
  secagg: SecAggSpec
  clip: ClipSpec
  devices: DeviceSpec
  reports: ReportSpec

  @property
  def population(self) -> int:
    """K: clients in the population (known once the data are loaded when num_clients = 0)."""
    return self.num_clients

  @property
  def clients_per_round(self) -> int:
    """C: the cohort sampled each round (C = K: fixed participation)."""
    return self.cohort_size or self.num_clients

  @classmethod
  def from_config(cls, config, population: int | None = None) -> "ExperimentSpec":
    """Validates `config`; `population` is the number of clients the data hold, needed when
    `num_clients` = 0 (all of them) to resolve the defaults that depend on it."""
    c = config
    g = lambda path: _get(c, path)  # noqa: E731
    num_clients = int(_positive("num_clients", int(g("num_clients")), allow_zero=True))
    if num_clients == 0 and population is not None:
      num_clients = int(population)
    cohort = int(_positive("cohort_size", int(g("cohort_size")), allow_zero=True)) or None
    if cohort is not None and num_clients and cohort > num_clients:
      raise ValueError(f"config.cohort_size={cohort} exceeds the population num_clients="
                       f"{num_clients}; sample at most the whole population (or set "
                       "cohort_size=0 for all clients every round).")
    summands = cohort or num_clients or 1  # clients in one secure sum
    secagg = _secagg_spec(g, summands)
    clip = _clip_spec(g)
    devices = _device_spec(g)
    reports = _report_spec(g)
    slow = devices.compute_slow + devices.network_slow + devices.both_slow
    if num_clients and slow > num_clients:
      raise ValueError(f"config.devices: {slow} slow clients (compute_slow + network_slow + "
                       f"both_slow) exceed num_clients={num_clients}.")
    spec = cls(
        seed=int(g("seed")),
        rounds=int(_positive("rounds", int(g("rounds")))),
        num_clients=num_clients,
        local_epochs=int(_positive("local_epochs", int(g("local_epochs")))),
        batch_size=int(_positive("batch_size", int(g("batch_size")))),
        client_lr=float(_positive("client_lr", float(g("client_lr")))),
        client_momentum=_fraction("client_momentum", g("client_momentum"), hi_open=True),
        server_optimizer=_choice("server_optimizer", g("server_optimizer"), SERVER_OPTIMIZERS),
        server_lr=float(_positive("server_lr", float(g("server_lr")))),
        eval_every=int(_positive("eval_every", int(g("eval_every")), allow_zero=True)),
        eval_batch_size=int(_positive("eval_batch_size", int(g("eval_batch_size")))),
        cohort_size=cohort,
        unavailable_rate=_fraction("unavailable_rate", g("unavailable_rate"), hi_open=True),
        scale=_scale_spec(g),
        method=_choice("method", g("method"), tuple(METHODS)),
        checkpoint_every=int(_positive("checkpoint_every", int(g("checkpoint_every")), allow_zero=True)),
        client_batch=_client_batch(int(g("client_batch")), g("model.name")),
        local_loop=_choice("local_loop", g("local_loop"), training.LOOPS),
        data=_data_spec(g),
        model=ModelSpec(name=_choice("model.name", g("model.name"), KNOWN_MODELS),
                        width=float(_positive("model.width", float(g("model.width"))))),
        secagg=secagg, clip=clip, devices=devices, reports=reports)
    if (clip.broadcast == "share_keys" and not secagg.enabled
        and METHODS[spec.method].broadcasts):
      raise ValueError("config.clip.broadcast='share_keys' sends the time reports inside "
                       "SecAgg's ShareKeys ciphertexts, and SecAgg is off; turn "
                       "config.secagg.enabled on or use clip.broadcast='own_message' (or "
                       "'auto').")
    spec = dataclasses.replace(spec, clip=dataclasses.replace(
        clip, straggler_info=resolve_straggler_info(
            clip.straggler_info, broadcasts=METHODS[spec.method].broadcasts,
            secagg=secagg.enabled, rule=reports.rule),
        broadcast=(clip.broadcast if clip.broadcast != "auto"
                   else "share_keys" if secagg.enabled else "own_message")))
    if (spec.clip.straggler_info == "histogram" and METHODS[spec.method].broadcasts
        and not spec.secagg.enabled):
      raise ValueError(f"config.clip.straggler_info='histogram' sums the time histograms under "
                       f"SecAgg, which is off for method {spec.method!r}; turn "
                       "config.secagg.enabled on or use clip.straggler_info='neighbours'.")
    if spec.clip.straggler_info == "histogram" and spec.reports.rule == "plausible":
      raise ValueError("config.reports.rule='plausible' checks each report against public "
                       "bounds, which a summed histogram does not allow; use reports.rule="
                       "'quantile' with clip.straggler_info='histogram'.")
    if spec.clip.upload == "planes" and METHODS[spec.method].broadcasts:
      _check_planes(spec)
    elif spec.clip.upload == "planes":  # a method that decides no stragglers sends both planes
      spec = dataclasses.replace(spec, clip=dataclasses.replace(spec.clip, upload="padded"))
    if not METHODS[spec.method].secagg_compatible and spec.secagg.enabled:
      raise ValueError("config.method='fluid' reads individual client updates on the server and "
                       "cannot run under secure aggregation; set --config.secagg.enabled=False "
                       "(it is reported as an insecure upper reference).")
    return spec
