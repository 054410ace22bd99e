"""PNG plots of a sweep (`clipjax.reporting.sweep_tables.Groups`), one set per straggler scenario.

Host side only; matplotlib is optional (`pip install -e '.[plots]'`). Per scenario:
accuracy vs virtual time (mean over seeds, band = min..max over seeds), virtual round time per
round, the pruning clients' mean keep fraction per round, and their clients' mean invariant and
slack unit counts per round.
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Mapping

import numpy as np

from clipjax.reporting import sweep_tables, tables


def available() -> bool:
  """Whether matplotlib can be imported."""
  try:
    importlib.import_module("matplotlib")
  except ImportError:
    return False
  return True


def _eval_curve(runs: Mapping[int, sweep_tables.Run]):
  """(virtual time, mean acc, min acc, max acc) at the rounds every seed evaluated."""
  per_seed = [{r["round"]: (r["virtual_time_s"], r["test_accuracy"]) for r in run.history
               if "test_accuracy" in r} for run in runs.values()]
  rounds = sorted(set.intersection(*(set(p) for p in per_seed)))
  t = np.array([[p[k][0] for k in rounds] for p in per_seed]).reshape(len(per_seed), -1)
  a = np.array([[p[k][1] for k in rounds] for p in per_seed]).reshape(len(per_seed), -1)
  return t.mean(0), a.mean(0), a.min(0), a.max(0)


def _per_round(runs: Mapping[int, sweep_tables.Run], fn):
  """(round, mean over seeds of fn(row)), NaN where no seed has a value; rounds all seeds have."""
  rows = [{r["round"]: fn(r) for r in run.history} for run in runs.values()]
  rounds = sorted(set.intersection(*(set(x) for x in rows)))
  values = np.array([[np.nan if x[k] is None else x[k] for k in rounds] for x in rows], np.float64)
  values = values.reshape(len(rows), -1)
  count = np.isfinite(values).sum(0)
  total = np.where(np.isfinite(values), values, 0.0).sum(0)
  return np.asarray(rounds), np.where(count > 0, total / np.maximum(count, 1), np.nan)


_STYLES = ("-", "--", ":", "-.")


def _style(by_method, method) -> dict:
  """A fixed colour and dash per method, so methods that coincide (random and clip_compute
  share keep fractions by construction) stay visible."""
  i = list(by_method).index(method)
  return {"color": f"C{i % 10}", "linestyle": _STYLES[i % len(_STYLES)]}


def plot_scenario(scenario: str, by_method: Mapping[str, Mapping[int, sweep_tables.Run]],
                  out: pathlib.Path) -> list[pathlib.Path]:
  """Writes the four PNGs of one scenario into `out`; returns their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  written = []

  def save(fig, name):
    fig.tight_layout()
    path = out / f"{scenario}_{name}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for method, runs in by_method.items():
    t, mean, low, high = _eval_curve(runs)
    if t.size:
      style = _style(by_method, method)
      ax.plot(t, mean, marker=".", label=f"{method} (n={len(runs)})", **style)
      if len(runs) > 1:
        ax.fill_between(t, low, high, color=style["color"], alpha=0.2, linewidth=0)
  ax.set(xlabel="virtual time (s)", ylabel="test accuracy",
         title=f"{scenario}: accuracy vs virtual time (band: min..max over seeds)")
  ax.legend(fontsize=8)
  save(fig, "accuracy_vs_time")

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for method, runs in by_method.items():
    ax.plot(*_per_round(runs, lambda r: r["round_time_s"]), label=method,
            **_style(by_method, method))
  ax.set(xlabel="round", ylabel="round time (virtual s)",
         title=f"{scenario}: round time (mean over seeds)")
  ax.legend(fontsize=8)
  save(fig, "round_time")

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for method, runs in by_method.items():
    rounds, keep = _per_round(runs, lambda r: tables.straggler_keep([r]))
    if np.isfinite(keep).any():
      ax.plot(rounds, keep, marker=".", label=method, **_style(by_method, method))
  ax.set(xlabel="round", ylabel="keep fraction p",
         title=f"{scenario}: pruning clients' mean keep fraction")
  if ax.lines:
    ax.legend(fontsize=8)
  save(fig, "keep_fraction")

  fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True)
  for i, (key, ax) in enumerate(zip(("invariant_units", "slack_units"), axes)):
    for method, runs in by_method.items():
      rounds, count = _per_round(runs, lambda r, i=i: tables.straggler_counts([r])[i])
      if np.isfinite(count).any():
        ax.plot(rounds, count, marker=".", label=method, **_style(by_method, method))
    ax.set(xlabel="round", ylabel=key.replace("_", " "),
           title=f"{scenario}: {key.split('_')[0]} units (pruning clients)")
    if ax.lines:
      ax.legend(fontsize=8)
  save(fig, "unit_counts")
  return written


def plot_sweep(groups: sweep_tables.Groups, out: str | pathlib.Path) -> list[pathlib.Path] | None:
  """All scenarios' plots into `out`; None (nothing written) without matplotlib."""
  if not available():
    return None
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  written = []
  for scenario, by_method in groups.items():
    written += plot_scenario(scenario, by_method, out)
  return written
