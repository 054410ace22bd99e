"""Building blocks of the paper sweeps in this folder: methods x straggler scenarios x seeds.

Each sweep file (`cifar10_vgg9.py`, `femnist_cnn.py`, `shakespeare_lstm.py`) builds the base
config of one size from the per-dataset config in `configs/` and calls `build`. A sweep is an
ordered list of `(run_name, config)`; the run name is `<scenario>/<method>/seed<s>`, the folder
layout `scripts/reproduce.py` writes and `clipjax.reporting.sweep_tables` reads. Seeds are the outer loop,
so a sweep stopped half way already holds complete tables for its first seeds.

Methods (DESIGN 2.8): the six of the paper's comparison, with `fedavg_plain` (FedAvg without
SecAgg) added wherever `fluid` runs, since `fluid` reads individual updates and cannot run under
SecAgg; both are measured against each other, as in `scripts/compare.py`. All other methods run
under SecAgg+ with the analysed (k, t).

Scenarios, with s = round(0.2 x clients) stragglers (the paper's 20%, at least one):
  compute:          s clients with a slow CPU (2/3 speed), everyone on 5G.
  compute_network:  s // 2 slow-CPU clients, the rest split into 4G-only (`network_slow`) and
                    slow CPU and 4G (`both_slow`, which gets the odd one): 20 clients give
                    2 / 1 / 1.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from clipjax import methods as methods_lib

METHODS = ("fedavg", "random", "ordered", "fluid", "clip_compute", "clip_network")
SCENARIOS = ("compute", "compute_network")
SIZES = ("cpu", "full")
SEEDS = (0, 1, 2)
STRAGGLER_FRACTION = 0.2
_SWEEP_AXES = ("method", "seed")  # set by the sweep itself, never by an override


def check_size(size: str) -> str:
  if size not in SIZES:
    raise ValueError(f"size must be one of {SIZES}, got {size!r}.")
  return size


def straggler_counts(scenario: str, num_clients: int) -> dict[str, int]:
  """Slow clients of each kind (`devices.compute_slow/network_slow/both_slow`) in `scenario`.

  Raises:
    ValueError: for an unknown scenario or no clients.
  """
  if num_clients < 1:
    raise ValueError(f"the paper sweeps need num_clients >= 1 (the clients of every round), "
                     f"got {num_clients}.")
  s = max(1, round(STRAGGLER_FRACTION * num_clients))
  if scenario == "compute":
    return {"compute_slow": s, "network_slow": 0, "both_slow": 0}
  if scenario == "compute_network":
    compute = s // 2
    network = (s - compute) // 2
    return {"compute_slow": compute, "network_slow": network, "both_slow": s - compute - network}
  raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}.")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
  """`["rounds=2", "model.width=0.125"]` -> `{"rounds": 2, "model.width": 0.125}`.

  Values are Python literals where they parse as one (numbers, True/False), else strings.

  Raises:
    ValueError: for an item without `=`.
  """
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"override {item!r} must look like key=value (e.g. rounds=2).")
    try:
      out[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[key.strip()] = value.strip()
  return out


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Sets dotted keys of `config` in place.

  Raises:
    ValueError: for a key the config does not have, a sweep axis (method, seed) or a value of
      the wrong type.
  """
  for key, value in overrides.items():
    if key in _SWEEP_AXES:
      raise ValueError(f"override {key}= is a sweep axis; use --{key}s instead.")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ValueError(f"override {key}: the config has no section {part!r}.")
      node = node[part]
    if leaf not in node:
      raise ValueError(f"override {key}: the config has no key {leaf!r} (see configs/base.py).")
    if isinstance(node[leaf], float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    try:
      node[leaf] = value
    except TypeError as e:
      raise ValueError(f"override {key}={value!r}: {e}") from e


# The rules before issues 24 and 27 changed the defaults: the studies published before pin
# them (`pin_published`), so their stored runs stay finished and their tables reproducible:
# CLIP's reports and invariance rule, the SecAgg+ graph drawn from the seed alone (their
# neighbours-only reports depend on it), and a server charged no work (every method reads it).
PUBLISHED = {"clip.straggler_info": "neighbours", "clip.broadcast": "own_message",
             "clip.score": "max_relative", "clip.threshold_init": "min",
             "secagg.graph_randomness": "seed", "devices.server_speedup": 0.0}


def pin_published(config: ml_collections.ConfigDict,
                  overrides: Mapping[str, Any] | None = None) -> None:
  """Sets `PUBLISHED` on `config` in place, except the keys `overrides` sets."""
  for key, value in PUBLISHED.items():
    if key not in (overrides or {}):
      section, leaf = key.split(".")
      config[section][leaf] = value


def method_names(methods: Sequence[str]) -> list[str]:
  """The methods asked, with `fedavg_plain` added just before `fluid` (DESIGN 2.8;
  `clipjax.methods.with_plain_reference`).

  Raises:
    ValueError: for an unknown method.
  """
  names = list(dict.fromkeys(methods))
  allowed = tuple(methods_lib.METHODS) + (methods_lib.PLAIN_REFERENCE,)
  for name in names:
    if name not in allowed:
      raise ValueError(f"unknown method {name!r}; choose from {allowed}.")
  return methods_lib.with_plain_reference(names)


def set_method(config: ml_collections.ConfigDict, name: str) -> None:
  """Sets the run name `name`'s method and SecAgg switch on `config`: `fedavg_plain` runs
  `fedavg`, and it and `fluid` run without SecAgg, every other method with it."""
  config.method = methods_lib.base_method(name)
  config.secagg.enabled = not methods_lib.runs_without_secagg(name)


def build(base: ml_collections.ConfigDict, *, seeds: Sequence[int] = SEEDS,
          methods: Sequence[str] = METHODS, scenarios: Sequence[str] = SCENARIOS,
          overrides: Mapping[str, Any] | None = None
          ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """The sweep over `base`: `[(f"{scenario}/{method}/seed{s}", config), ...]`, seeds outermost.

  Args:
    base: the dataset's config of one size (SecAgg settings, rounds, width, ...).
    seeds: run seeds.
    methods: method names; `fedavg_plain` is added beside `fluid`.
    scenarios: straggler scenarios (`SCENARIOS`).
    overrides: dotted keys set on every run (`parse_overrides`); applied before the straggler
      counts are derived from `num_clients`, and again after, so an explicit
      `devices.*_slow` override wins.

  Raises:
    ValueError: for an unknown method or scenario, or a bad override.
  """
  overrides = dict(overrides or {})
  base = base.copy_and_resolve_references()
  apply_overrides(base, overrides)
  names = method_names(methods)
  runs = []
  for seed in seeds:
    for scenario in scenarios:
      counts = straggler_counts(scenario, base.num_clients)
      for name in names:
        c = base.copy_and_resolve_references()
        c.seed = int(seed)
        set_method(c, name)
        c.secagg.protocol = "secagg+"
        for key, value in counts.items():
          c.devices[key] = value
        apply_overrides(c, overrides)
        runs.append((f"{scenario}/{name}/seed{seed}", c))
  return runs


def load_sweep_file(path: str):
  """The sweep module at `path` (it must define `get_sweep(size, ...)`).

  Raises:
    FileNotFoundError: if the file does not exist.
    ValueError: if it defines no `get_sweep`.
  """
  file = pathlib.Path(path)
  if not file.is_file():
    raise FileNotFoundError(f"sweep file {file} not found; choose one of configs/paper/*.py.")
  spec = importlib.util.spec_from_file_location(f"sweep_file_{file.stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{file} defines no get_sweep(size); is it a sweep file of configs/paper/?")
  return module
