"""Tables of the studies beyond the paper (`configs/studies/`): lying clients, churn, the
invariance criteria and method pairs (uploads that follow the link).

Host side only. The runs are a sweep folder as `clipjax.reporting.sweep_tables` reads it
(`<setting>/<method>/seed<s>`); these tables lay the settings out as a grid and measure every
cell against `fedavg` on the same seeds: the round-time cut is 1 - mean(method) / mean(fedavg)
over the seeds both have, the accuracy delta the mean of per-seed differences of the final
test accuracy with its 95% t-interval. Every value comes from `metrics.jsonl` rows.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from clipjax import methods
from clipjax.reporting import summary as summary_lib
from clipjax.reporting import sweep_tables
from clipjax.reporting import tables


def _cells(runs: Mapping[int, sweep_tables.Run], ref: Mapping[int, sweep_tables.Run] | None,
           target: float) -> dict:
  """The numbers of one (setting, method) cell, against `ref` when given."""
  per = lambda fn, rs: sweep_tables._per_seed(rs, fn)  # noqa: E731
  round_s = per(summary_lib.mean_round_time, runs)
  acc = per(summary_lib.final_accuracy, runs)
  out = {"seeds": len(runs), "round_s": float(np.mean(list(round_s.values()))),
         "acc": sweep_tables.t_interval(list(acc.values())) if acc else None,
         "stragglers": float(np.mean([tables.stragglers_per_round(run.history)
                                      for run in runs.values()])),
         "tta": per(lambda h: tables.time_to_accuracy(h, target), runs)}
  inv = [tables.straggler_counts(run.history)[0] for run in runs.values()]
  inv = [v for v in inv if v is not None]
  out["invariant"] = float(np.mean(inv)) if inv else None
  out["implausible"] = float(np.mean([np.mean([r.get("implausible_reports", 0) for r in run.history])
                                      for run in runs.values()]))
  if ref:
    ref_s = per(summary_lib.mean_round_time, ref)
    out["cut"] = sweep_tables._cut(round_s, ref_s)
    out["delta"] = sweep_tables.paired_delta(acc, per(summary_lib.final_accuracy, ref))
  return out


def _finished_groups(root) -> tuple[dict, list[str]]:
  """The sweep's runs by setting and method, finished runs only, and the partial ones' names.

  A study cell mixes seeds, so a run still in progress (or stopped) would enter its means
  with a few rounds; it is left out and named under the table instead.
  """
  groups, partial = {}, []
  for setting, by_method in sweep_tables.group(sweep_tables.load_sweep(root)).items():
    for method, runs in by_method.items():
      done = {s: r for s, r in runs.items() if r.finished}
      partial += [f"{setting}/{method}/seed{s}" for s in sorted(runs) if s not in done]
      if done:
        groups.setdefault(setting, {})[method] = done
  return groups, partial


def _partial_note(partial: Sequence[str]) -> str:
  return ("" if not partial else
          f"Left out, not finished ({len(partial)}): {', '.join(partial)}.\n")


def _pct(v) -> str:
  return "" if v is None else f"{100 * v:+.1f}%"


def _delta(iv) -> str:
  return sweep_tables._interval_text(iv, scale=100.0, signed=True)


def lying_table(root: str | pathlib.Path, methods: Sequence[str], rules: Sequence[str],
                target: float) -> str:
  """Liar fraction x factor -> round-time cut and accuracy delta vs fedavg, per method and rule.

  Raises:
    ValueError: if `root` holds no runs, or no `honest/fedavg` runs to measure against.
  """
  groups, partial = _finished_groups(root)
  ref = groups.get("honest", {}).get("fedavg")
  if not ref:
    raise ValueError(f"{root} has no finished honest/fedavg runs: the study's reference is "
                     "missing; run the study (scripts/reproduce.py) until they finish.")
  header = ["liars", "factor"]
  for m in methods:
    for rule in rules:
      label = m if rule == "quantile" else f"{m} + {rule}"
      header += [f"{label}: round-time cut", f"{label}: acc delta, points [95% CI]",
                 f"{label}: stragglers/round"]
      if rule != "quantile":
        header.append(f"{label}: reports dropped/round")
  rows = []
  for setting, by_method in groups.items():
    fraction, factor = (0.0, 1.0) if setting == "honest" else _parse_setting(setting)
    row = [f"{fraction:g}", f"{factor:g}"]
    for m in methods:
      for rule in rules:
        name = m if rule == "quantile" else f"{m}+{rule}"
        cell = _cells(by_method[name], ref, target) if name in by_method else None
        row += (["", "", ""] if cell is None else
                [_pct(cell["cut"]), _delta(cell["delta"]), f"{cell['stragglers']:.2f}"])
        if rule != "quantile":
          row.append("" if cell is None else f"{cell['implausible']:.1f}")
    rows.append(row)
  rows.sort(key=lambda r: (float(r[0]), float(r[1])))
  fed = _cells(ref, None, target)
  return "\n".join([
      summary_lib.markdown_table(header, rows), "",
      f"Reference: fedavg (honest setting), mean round {fed['round_s']:.4g} virtual s, final "
      f"accuracy {sweep_tables._interval_text(fed['acc'])}; seeds "
      f"{','.join(map(str, sorted(ref)))}. Cut: 1 - mean(method round s) / mean(fedavg round "
      "s); delta: final accuracy minus fedavg's, paired by seed, mean with 95% t-interval.",
      _partial_note(partial)])


def _parse_setting(name: str) -> tuple[float, float]:
  head, _, factor = name.partition("_x")
  return float(head[len("liars"):]), float(factor)


def churn_table(root: str | pathlib.Path, methods: Sequence[str], target: float) -> str:
  """Cohort fraction x method (and CLIP's reference) -> accuracy, round time, invariant units.

  Raises:
    ValueError: if `root` holds no runs.
  """
  groups, partial = _finished_groups(root)
  header = ["cohort", "method", "seeds", "final acc [95% CI]", "acc delta vs fedavg, points",
            "mean round s (virtual)", "round-time cut vs fedavg", f"virtual s to acc {target:g}",
            "stragglers/round", "invariant units (stragglers)"]
  rows = []
  for setting in sorted(groups, key=lambda s: int(s[len("cohort"):]) if s[6:].isdigit() else 0):
    by_method = groups[setting]
    ref = by_method.get("fedavg")
    for m in methods:
      if m not in by_method:
        continue
      cell = _cells(by_method[m], ref if m != "fedavg" else None, target)
      tta = cell["tta"]
      rows.append([setting[len("cohort"):] + "%", m, cell["seeds"],
                   sweep_tables._interval_text(cell["acc"]), _delta(cell.get("delta")),
                   cell["round_s"], _pct(cell.get("cut")),
                   f"{np.mean(list(tta.values())):.1f} ({len(tta)}/{cell['seeds']})" if tta
                   else "never",
                   f"{cell['stragglers']:.2f}",
                   "" if cell["invariant"] is None else f"{cell['invariant']:.1f}"])
  return summary_lib.markdown_table(header, rows) + "\n" + (
      "\n" + _partial_note(partial) if partial else "")


def _final_loss(history) -> float | None:
  """Test loss of the last evaluated row (None without evaluations)."""
  evals = [r["test_loss"] for r in history if "test_loss" in r]
  return evals[-1] if evals else None


def _setting_value(setting: str, prefix: str) -> float | None:
  try:
    return float(setting[len(prefix):]) if setting.startswith(prefix) else None
  except ValueError:
    return None


def criteria_cells(root: str | pathlib.Path, contrast: str = "random"):
  """The invariance study's numbers: `(cells, fedavg, partial)`.

  `cells[(setting, criterion)]` holds the seeds, the final test accuracy (t-interval), the
  per-seed final test accuracy and loss, and the paired deltas of accuracy (points) against
  `reference/fedavg` and of accuracy and test loss against the same setting's `contrast`
  criterion; for `threshold<s>` settings, against `keep<p>/clip_compute` at the same keep
  fraction (s = 1) as well; and the pruning clients' mean invariant units (score <= threshold)
  and slack units (non-invariant units dropped).

  Raises:
    ValueError: if `root` holds no finished `reference/fedavg` runs.
  """
  groups, partial = _finished_groups(root)
  ref = groups.get("reference", {}).get("fedavg")
  if not ref:
    raise ValueError(f"{root} has no finished reference/fedavg runs: the study's reference is "
                     "missing; run the study (scripts/reproduce.py) until they finish.")
  per = lambda fn, rs: sweep_tables._per_seed(rs, fn)  # noqa: E731
  ref_acc = per(summary_lib.final_accuracy, ref)
  cells = {}
  for setting, by_method in groups.items():
    if setting == "reference":
      continue
    for criterion, runs in by_method.items():
      acc = per(summary_lib.final_accuracy, runs)
      loss = per(_final_loss, runs)
      rule = methods.METHODS.get(criterion.split("+")[0])
      counts = ([tables.straggler_counts(r.history) for r in runs.values()]
                if rule is not None and rule.prune_rule == "client_invariance"
                else [])  # other rules record no invariant units: blank, not 0
      inv = [i for i, _ in counts if i is not None]
      slack = [k for _, k in counts if k is not None]
      keep = next(iter(runs.values())).config.get("clip", {}).get("fixed_keep")
      cells[(setting, criterion)] = {
          "seeds": len(runs), "acc": sweep_tables.t_interval(list(acc.values())) if acc else None,
          "acc_by_seed": acc, "loss_by_seed": loss, "keep": keep,
          "vs_fedavg": sweep_tables.paired_delta(acc, ref_acc),
          "invariant": float(np.mean(inv)) if inv else None,
          "slack": float(np.mean(slack)) if slack else None}
  for (setting, criterion), cell in cells.items():
    versus = [(setting, contrast)]
    if setting.startswith("threshold") and cell["keep"]:
      versus.append((f"keep{cell['keep']:g}", "clip_compute"))
    for key, other in zip(("vs_contrast", "vs_unscaled"), versus):
      o = cells.get(other)
      if o is None or other == (setting, criterion):
        continue
      cell[key] = sweep_tables.paired_delta(cell["acc_by_seed"], o["acc_by_seed"])
      cell[key + "_loss"] = sweep_tables.paired_delta(cell["loss_by_seed"], o["loss_by_seed"])
  fed = {"seeds": len(ref), "acc": sweep_tables.t_interval(list(ref_acc.values()))}
  return cells, fed, partial


def keep_settings(cells) -> list[str]:
  """The `keep<p>` settings of `criteria_cells`, by p."""
  return sorted({s for s, _ in cells if _setting_value(s, "keep") is not None},
                key=lambda s: _setting_value(s, "keep"))


def threshold_rows(cells) -> list[tuple[float, dict]]:
  """`(scale, cell)` of `clip_compute` per `threshold<s>` setting, by scale, with the unscaled
  `keep<p>/clip_compute` cell as scale 1 when its p is the thresholds' p."""
  scaled = [(_setting_value(s, "threshold"), c) for (s, crit), c in cells.items()
            if crit == "clip_compute" and _setting_value(s, "threshold") is not None]
  keeps = {c["keep"] for _, c in scaled}
  scaled += [(1.0, c) for (s, crit), c in cells.items() if crit == "clip_compute"
             and _setting_value(s, "keep") is not None and c["keep"] in keeps]
  return sorted(scaled, key=lambda x: x[0])


def _loss(iv) -> str:
  """A test-loss delta (nats), three decimals: losses move less than accuracy points."""
  return sweep_tables._interval_text(iv, signed=True, digits=3)


def _units(cell) -> str:
  if cell["invariant"] is None:
    return ""
  return f"{cell['invariant']:.1f} / {cell['slack']:.1f}"


def criteria_table(root: str | pathlib.Path, criteria: Sequence[str], contrast: str = "random"
                   ) -> str:
  """Per keep fraction, each criterion's final accuracy and its paired deltas against fedavg
  and against `contrast` (random units by default), plus the test-loss delta against
  `contrast`; then, when the sweep has `threshold<s>` settings, the threshold-sensitivity rows.

  Raises:
    ValueError: if `root` holds no finished `reference/fedavg` runs.
  """
  cells, fed, partial = criteria_cells(root, contrast)
  header = ["keep p", "criterion", "seeds", "final acc [95% CI]",
            "acc delta vs fedavg, points [95% CI]", f"acc delta vs {contrast}, points [95% CI]",
            f"test-loss delta vs {contrast} [95% CI]", "invariant units / slack units dropped"]
  rows = []
  for setting in keep_settings(cells):
    for criterion in criteria:
      cell = cells.get((setting, criterion))
      if cell is None:
        continue
      rows.append([f"{_setting_value(setting, 'keep'):g}", criterion, cell["seeds"],
                   sweep_tables._interval_text(cell["acc"]), _delta(cell["vs_fedavg"]),
                   "" if criterion == contrast else _delta(cell.get("vs_contrast")),
                   "" if criterion == contrast else _loss(cell.get("vs_contrast_loss")),
                   _units(cell)])
  out = [summary_lib.markdown_table(header, rows), "",
         f"Reference: fedavg (`reference/fedavg`), final accuracy "
         f"{sweep_tables._interval_text(fed['acc'])}. Deltas: paired by seed, mean with 95% "
         "t-interval over the seeds both have; test loss in nats. Units: a pruning client's "
         "invariant units (score <= threshold; the band rule keeps them in [m, 2m], m the units "
         "it drops) and the non-invariant units it had to drop, summed over layers, mean over "
         "pruning client-rounds (invariance rules only).", ""]
  scaled = threshold_rows(cells)
  if scaled:
    header = ["threshold scale", "keep p", "seeds", "invariant units / slack units dropped",
              "final acc [95% CI]", "acc delta vs fedavg, points [95% CI]",
              "acc delta vs scale 1, points [95% CI]", "test-loss delta vs scale 1 [95% CI]"]
    rows = []
    for scale, cell in scaled:
      rows.append([f"{scale:g}", f"{cell['keep']:g}", cell["seeds"], _units(cell),
                   sweep_tables._interval_text(cell["acc"]), _delta(cell["vs_fedavg"]),
                   _delta(cell.get("vs_unscaled")),
                   _loss(cell.get("vs_unscaled_loss"))])
    out += ["Threshold sensitivity (`clip_compute`, a unit invariant when its score is <= scale x "
            "the band threshold):", "", summary_lib.markdown_table(header, rows), ""]
  out.append(_partial_note(partial))
  return "\n".join(out)


def pairs_table(root: str | pathlib.Path, pairs: Sequence[Sequence[str]]) -> str:
  """Each (method, reference) pair of every setting, paired by seed: the round-time cut
  (1 - mean / mean over the seeds both finished, and per seed) and the accuracy delta with its
  95% t-interval (issue 26: the bit-plane upload against fedavg and its padded counterpart).

  Raises:
    ValueError: if `root` holds no runs.
  """
  groups, partial = _finished_groups(root)
  header = ["setting", "method", "against", "seeds", "mean round s", "reference round s",
            "round-time cut", "cut per seed", "acc delta, points [95% CI, paired]"]
  rows = []
  for setting in sorted(groups):
    by_method = groups[setting]
    for method, ref in pairs:
      if method not in by_method or ref not in by_method:
        continue
      per = lambda fn, m: sweep_tables._per_seed(by_method[m], fn)  # noqa: E731
      mine, theirs = (per(summary_lib.mean_round_time, m) for m in (method, ref))
      seeds = sorted(set(mine) & set(theirs))
      if not seeds:
        continue
      delta = sweep_tables.paired_delta(per(summary_lib.final_accuracy, method),
                                        per(summary_lib.final_accuracy, ref))
      rows.append([setting, method, ref, len(seeds),
                   f"{np.mean([mine[s] for s in seeds]):.4f}",
                   f"{np.mean([theirs[s] for s in seeds]):.4f}",
                   _pct(sweep_tables._cut(mine, theirs)),
                   ", ".join(f"{100 * (1 - mine[s] / theirs[s]):+.1f}" for s in seeds),
                   _delta(delta)])
  return summary_lib.markdown_table(header, rows) + "\n" + (
      "\n" + _partial_note(partial) if partial else "")


def grid_table(table: Mapping, root: str | pathlib.Path, target: float) -> str:
  """The grid table a study's sweep file names in its `STUDY_TABLE` setting:
  `{"kind": "lying", "methods": [...], "rules": [...]}`, `{"kind": "churn", "methods": [...]}`
  `{"kind": "criteria", "criteria": [...], "contrast": "random"}` or
  `{"kind": "pairs", "pairs": [(method, reference), ...]}`.

  Raises:
    ValueError: for an unknown kind.
  """
  kind = table.get("kind")
  if kind == "lying":
    return lying_table(root, table["methods"], table["rules"], target)
  if kind == "churn":
    return churn_table(root, table["methods"], target)
  if kind == "criteria":
    return criteria_table(root, table["criteria"], table.get("contrast", "random"))
  if kind == "pairs":
    return pairs_table(root, table["pairs"])
  raise ValueError(f"STUDY_TABLE kind {kind!r} is not one of 'lying', 'churn', 'criteria', "
                   "'pairs'")
