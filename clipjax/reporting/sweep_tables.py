"""Sweep tables: runs grouped by (scenario, method) over seeds, with 95% intervals.

Host side only. A sweep folder holds `<scenario>/<method>/seed<s>/` run folders
(`scripts/reproduce.py`, `configs/paper/sweep.py`). Per scenario and method this module gives the
mean virtual round time and its cut against the method's reference (`fedavg`, or `fedavg_plain`
for a run without SecAgg, as in `clipjax.reporting.tables`), the time to a target accuracy and its cut, the
final accuracy as a mean with a 95% t-interval over seeds, and the accuracy delta against the
reference paired by seed (the mean of per-seed differences with its t-interval). Cuts use the
seeds both runs have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from clipjax import methods
from clipjax.clock import devices
from clipjax.reporting import summary as summary_lib
from clipjax.reporting import tables

# The registry's order, `fedavg_plain` just before `fluid`.
METHOD_ORDER = tuple(methods.with_plain_reference(methods.METHODS))
SCENARIO_ORDER = ("compute", "compute_network")
_SEED_DIR = re.compile(r"seed(\d+)$")


@dataclasses.dataclass(frozen=True)
class Run:
  """One finished or partial run of a sweep (its metrics rows, summary and config)."""

  scenario: str
  method: str
  seed: int
  history: list[dict[str, Any]]
  summary: dict[str, Any]
  config: dict[str, Any]

  @property
  def finished(self) -> bool:
    """Whether the run wrote its summary (a partial run is tabulated as it stands)."""
    return bool(self.summary)

  @property
  def secure(self) -> bool:
    if "secagg" in self.summary:
      return self.summary["secagg"] != "off"
    return bool(self.config.get("secagg", {}).get("enabled", True))


@dataclasses.dataclass(frozen=True)
class Interval:
  """Mean of n values with its two-sided t-interval (NaN bounds when n < 2)."""

  mean: float
  low: float
  high: float
  n: int


Groups = dict[str, dict[str, dict[int, Run]]]  # scenario -> method -> seed -> run


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
  """Mean +- t_{(1+confidence)/2, n-1} x s / sqrt(n), s the sample sd (ddof 1).

  Raises:
    ValueError: for no values or a confidence outside (0, 1).
  """
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
  x = np.asarray(values, np.float64)
  if x.size == 0:
    raise ValueError("t_interval needs at least one value.")
  mean = float(x.mean())
  if x.size < 2:
    return Interval(mean, math.nan, math.nan, 1)
  half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  return Interval(mean, mean - half, mean + half, int(x.size))


def paired_delta(values: Mapping[int, float], reference: Mapping[int, float],
                 confidence: float = 0.95) -> Interval | None:
  """t-interval of `values[s] - reference[s]` over the seeds both have (None if none)."""
  seeds = sorted(set(values) & set(reference))
  if not seeds:
    return None
  return t_interval([values[s] - reference[s] for s in seeds], confidence)


def load_sweep(root: str | pathlib.Path) -> list[Run]:
  """Every `<scenario>/<method>/seed<s>/metrics.jsonl` under `root` with at least one row.

  Raises:
    ValueError: if `root` holds no such run.
  """
  root = pathlib.Path(root)
  runs = []
  for metrics in sorted(root.glob("*/*/seed*/metrics.jsonl")):
    folder = metrics.parent
    match = _SEED_DIR.match(folder.name)
    if match is None:
      continue
    summary, history = tables.load_run(folder)
    if not history:
      continue
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    runs.append(Run(folder.parent.parent.name, folder.parent.name, int(match.group(1)),
                    history, summary, config))
  if not runs:
    raise ValueError(f"no runs under {root} (expected <scenario>/<method>/seed<s>/metrics.jsonl); "
                     "run scripts/reproduce.py with this --root first.")
  return runs


def _ordered(names, order) -> list[str]:
  return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def group(runs: Sequence[Run]) -> Groups:
  """scenario -> method -> seed -> run, scenarios and methods in the paper's order."""
  raw: dict[str, dict[str, dict[int, Run]]] = {}
  for r in runs:
    raw.setdefault(r.scenario, {}).setdefault(r.method, {})[r.seed] = r
  return {s: {m: dict(sorted(raw[s][m].items())) for m in _ordered(raw[s], METHOD_ORDER)}
          for s in _ordered(raw, SCENARIO_ORDER)}


def reference(method: str, by_method: Mapping[str, Mapping[int, Run]]) -> str | None:
  """The run a method is measured against: `fedavg_plain` for runs without SecAgg
  (`clipjax.methods.reference_run`)."""
  return methods.reference_run(next(iter(by_method[method].values())).secure, by_method)


def fast_tier(config: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> float:
  """The fast compute tier in FLOP/s the run used: its summary's resolved value, else the
  config's `devices.fast_flops` (0 meaning the default estimate)."""
  if summary and summary.get("fast_flops"):
    return float(summary["fast_flops"])
  return float(config.get("devices", {}).get("fast_flops", 0.0)) or devices.FAST_FLOPS_PER_S


def calibration(run: "Run") -> str:
  """`default` (the documented estimate) or `measured` (this machine's, measure_device.py)."""
  return run.summary.get("calibration") or run.config.get("devices", {}).get("calibration",
                                                                              "default")


def _cut(values: Mapping[int, float], ref: Mapping[int, float]) -> float | None:
  """1 - mean(values) / mean(ref) over the seeds both have."""
  seeds = sorted(set(values) & set(ref))
  if not seeds:
    return None
  return 1.0 - float(np.mean([values[s] for s in seeds])) / float(np.mean([ref[s] for s in seeds]))


def _per_seed(runs: Mapping[int, Run], fn) -> dict[int, float]:
  out = {s: fn(r.history) for s, r in runs.items()}
  return {s: v for s, v in out.items() if v is not None}


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _interval_text(iv: Interval | None, scale: float = 1.0, signed: bool = False,
                   digits: int | None = None) -> str:
  """`mean [low, high] (n=..)`: signed with 2 decimals (deltas) or 4 (values), or `digits`."""
  if iv is None:
    return ""
  fmt = ("{:+." if signed else "{:.") + f"{(2 if signed else 4) if digits is None else digits}f}}"
  text = fmt.format(scale * iv.mean)
  if iv.n < 2:
    return f"{text} (n=1)"
  return f"{text} [{fmt.format(scale * iv.low)}, {fmt.format(scale * iv.high)}] (n={iv.n})"


def scenario_rows(by_method: Mapping[str, Mapping[int, Run]], target: float) -> list[tuple]:
  """One row per method, in the columns of `header(target)`."""
  round_s = {m: _per_seed(runs, summary_lib.mean_round_time) for m, runs in by_method.items()}
  acc = {m: _per_seed(runs, summary_lib.final_accuracy) for m, runs in by_method.items()}
  tta = {m: _per_seed(runs, lambda h: tables.time_to_accuracy(h, target))
         for m, runs in by_method.items()}
  rows = []
  for method, runs in by_method.items():
    ref = reference(method, by_method)
    vs = ref is not None and ref != method
    seeds = sorted(runs)
    unfinished = [s for s in seeds if not runs[s].finished]
    reached = len(tta[method])
    tta_text = ("never" if not reached else
                f"{np.mean(list(tta[method].values())):.1f}"
                + ("" if reached == len(seeds) else f" ({reached}/{len(seeds)} seeds)"))
    spacing = max((tables.eval_spacing(r.history) or 0) for r in runs.values())
    if spacing > 1:
      tta_text += f" (eval every {spacing})"
    cut = _cut(round_s[method], round_s[ref]) if vs else None
    tta_cut = _cut(tta[method], tta[ref]) if vs else None
    delta = paired_delta(acc[method], acc[ref]) if vs else None
    inv, slack = zip(*(tables.straggler_counts(r.history) for r in runs.values()))
    pooled = tables.decisions_vs_all_heard([row for r in runs.values() for row in r.history])
    rows.append((
        method, "on" if next(iter(runs.values())).secure else "off",
        f"{','.join(map(str, seeds))} (n={len(seeds)})"
        + (f", unfinished: {','.join(map(str, unfinished))}" if unfinished else ""),
        _mean(round_s[method].values()),
        "" if cut is None else f"{100 * cut:+.1f}% vs {ref}",
        tta_text,
        "" if tta_cut is None else f"{100 * tta_cut:+.1f}% vs {ref}",
        _interval_text(t_interval(list(acc[method].values())) if acc[method] else None),
        _interval_text(delta, scale=100.0, signed=True),
        _blank(_mean(tables.straggler_keep(r.history) for r in runs.values())),
        _mean(tables.stragglers_per_round(r.history) for r in runs.values()),
        _mean(tables.pruning_per_round(r.history) for r in runs.values()),
        _blank(_mean(tables.slow_pruning(r.history)[0] for r in runs.values())),
        _blank(_mean(tables.slow_pruning(r.history)[1] for r in runs.values())),
        *(tables.recall_precision_cell(pooled[kind]) for kind in ("flagged", "pruning")),
        _blank(_mean(inv)), _blank(_mean(slack)),
        "/".join(sorted({f"{fast_tier(r.config, r.summary) / 1e9:.3g} ({calibration(r)})"
                         for r in runs.values()})),
    ))
  return rows


def _blank(v):
  return "" if v is None else v


def header(target: float) -> list[str]:
  return ["method", "SecAgg", "seeds", "mean round s (virtual)", "round-time cut",
          f"virtual s to acc {target:g}", "time-to-acc cut", "final acc, mean [95% CI]",
          "acc delta, points [95% CI, paired]", tables.KEEP_COLUMN, "stragglers/round",
          "pruning/round", tables.RECALL_COLUMN, tables.PRECISION_COLUMN,
          tables.SELF_ID_COLUMN + " (pooled)", tables.PRUNE_ID_COLUMN + " (pooled)",
          "invariant units (stragglers)", "slack units (stragglers)",
          "fast tier GFLOP/s (calibration)"]


def describe_scenario(by_method: Mapping[str, Mapping[int, Run]]) -> str:
  """One line: clients, slow clients of each kind, compute tiers, rounds, model."""
  run = next(iter(next(iter(by_method.values())).values()))
  c, d = run.config, run.config.get("devices", {})
  fast = fast_tier(c, run.summary)
  return (f"{c.get('data', {}).get('name', '?')}, {c.get('model', {}).get('name', '?')} "
          f"x{c.get('model', {}).get('width', '?')}, {run.summary.get('clients') or c.get('num_clients', '?')} clients"
          + (f" (cohorts of {c['cohort_size']} per round)" if c.get("cohort_size") else "") + ", "
          f"{c.get('rounds', '?')} rounds, {c.get('local_epochs', '?')} local epoch(s); slow "
          f"clients: {d.get('compute_slow', 0)} compute, {d.get('network_slow', 0)} network (4G), "
          f"{d.get('both_slow', 0)} both; compute tiers {fast / 1e9:g} / "
          f"{fast * d.get('slow_compute_ratio', 2 / 3) / 1e9:.3g} GFLOP/s ({calibration(run)} "
          "calibration)")


# The columns of a compact table (configs/paper/README.md): the comparison without the per-unit
# diagnostics.
COMPACT = ("method", "SecAgg", "mean round s (virtual)", "round-time cut", "virtual s to acc",
           "time-to-acc cut", "final acc, mean [95% CI]", "acc delta, points [95% CI, paired]",
           "stragglers/round", "pruning/round", tables.KEEP_COLUMN)


def markdown(groups: Groups, target: float, compact: bool = False) -> str:
  """Every scenario's table with a heading and a description line (`COMPACT` columns only
  when `compact`)."""
  parts = []
  for scenario, by_method in groups.items():
    head, rows = header(target), scenario_rows(by_method, target)
    if compact:
      keep = [i for i, h in enumerate(head) if any(h.startswith(c) for c in COMPACT)]
      head, rows = [head[i] for i in keep], [[r[i] for i in keep] for r in rows]
    parts += [f"## {scenario}", "", describe_scenario(by_method), "",
              summary_lib.markdown_table(head, rows), ""]
  parts.append("Intervals: 95% t-intervals over seeds (n stated); the accuracy delta is the mean "
               "of per-seed differences against the reference, paired by seed. Cuts: 1 - "
               "mean(method) / mean(reference) over the seeds both have (for time to accuracy: "
               "that reached the target; a mean over fewer seeds says k/n). Times are virtual "
               "seconds.")
  return "\n".join(parts) + "\n"
