"""Comparison tables and plots from run folders (`metrics.jsonl` + `summary.json`).

Host side only. Round time is the virtual (simulated) time of DESIGN 2.1; speed-up is
relative to the `fedavg` row of the same table (`fedavg_plain` for a run without SecAgg,
`clipjax.methods.reference_run`). The per-run numbers here (and `summary.mean_round_time`,
`summary.final_accuracy`) are the ones `sweep_tables` and `study_tables` average over seeds.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from clipjax import methods
from clipjax.reporting import summary as summary_lib


def load_run(workdir: str | pathlib.Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  folder = pathlib.Path(workdir)
  metrics = folder / "metrics.jsonl"
  if not metrics.exists():
    raise ValueError(f"{metrics} does not exist; run scripts/train.py with --workdir={folder} first.")
  history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
  summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
  return summary, history


def time_to_accuracy(history: list[dict[str, Any]], target: float) -> float | None:
  """Virtual seconds at the end of the first evaluated round at or above `target` (None if never).

  Only as fine as the evaluation spacing: `scripts/compare.py` evaluates every round so the
  number is a round's end, not a multiple of the spacing.
  """
  for row in history:
    if row.get("test_accuracy", -1.0) >= target:
      return row["virtual_time_s"]
  return None


def eval_spacing(history: list[dict[str, Any]]) -> int | None:
  """Rounds between evaluations (the largest gap), None without evaluations."""
  rounds = [r["round"] for r in history if "test_accuracy" in r]
  if not rounds:
    return None
  return max(b - a for a, b in zip([0] + rounds, rounds))


# Tables before 2026-12-03 had "straggler keep fraction": the mean over every flagged straggler.
KEEP_COLUMN = "keep fraction (pruning clients)"
RECALL_COLUMN = "slow clients pruning"      # share of slow devices' client-rounds (from round 2)
PRECISION_COLUMN = "pruning that are slow"  # share of pruning client-rounds on slow devices


def _pruning(row: dict[str, Any]) -> list[int]:
  """The clients of a round that flagged themselves stragglers and kept less than the model."""
  return [i for i in row.get("stragglers", []) if row["keep_fraction"][i] < 1.0]


def straggler_keep(history: list[dict[str, Any]]) -> float | None:
  """Mean keep fraction p over the clients that pruned (flagged stragglers with p < 1; None:
  none did). A flagged straggler whose rule kept the whole model is left out: averaging its 1.0
  in would understate how much the pruning clients cut."""
  kept = [r["keep_fraction"][i] for r in history for i in _pruning(r)]
  return float(np.mean(kept)) if kept else None


def stragglers_per_round(history: list[dict[str, Any]]) -> float:
  """Mean number of clients per round that decided they were stragglers (flagged)."""
  return float(np.mean([len(r.get("stragglers", [])) for r in history]))


def pruning_per_round(history: list[dict[str, Any]]) -> float:
  """Mean number of clients per round that pruned (flagged and kept p < 1)."""
  return float(np.mean([len(_pruning(r)) for r in history]))


def slow_pruning(history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
  """(recall, precision) of pruning against the slow devices, from round 2 on (round 1 has no
  time reports): the share of slow clients' client-rounds in which they pruned, and the share
  of pruning client-rounds that were slow clients'. None where a share has no denominator
  (no slow clients, nobody pruned, or no ground truth in the rows)."""
  return _recall_precision((set(r["true_stragglers"]), set(_pruning(r))) for r in history
                           if r.get("round", 0) >= 2 and "true_stragglers" in r
                           and "aborted" not in r and "skipped" not in r)


SELF_ID_COLUMN = "flagged vs all heard R/P"   # stragglers vs stragglers_all_heard
PRUNE_ID_COLUMN = "pruning vs all heard R/P"   # pruning vs pruning_all_heard


def _recall_precision(pairs) -> tuple[float | None, float | None]:
  """Pooled (recall, precision) of predicted sets against reference sets."""
  ref = got = both = 0
  for truth, predicted in pairs:
    ref, got, both = ref + len(truth), got + len(predicted), both + len(truth & predicted)
  return (both / ref if ref else None), (both / got if got else None)


def decisions_vs_all_heard(history: list[dict[str, Any]]) -> dict[str, tuple[float | None,
                                                                            float | None]]:
  """How each client's own decision compares with the one it would take with every client's
  report heard (`stragglers_all_heard`, `pruning_all_heard`), pooled over rounds from 2 on:
  {"flagged": (recall, precision), "pruning": (recall, precision)}. Recall: the share of the
  all-heard decisions a client also took; precision: the share of its decisions the all-heard
  rule also takes. None without a denominator (or rows written before the fields existed)."""
  rows = [r for r in history if r.get("round", 0) >= 2 and "stragglers_all_heard" in r
          and "aborted" not in r and "skipped" not in r]
  return {"flagged": _recall_precision((set(r["stragglers_all_heard"]), set(r["stragglers"]))
                                       for r in rows),
          "pruning": _recall_precision((set(r["pruning_all_heard"]), set(_pruning(r)))
                                       for r in rows)}


def recall_precision_cell(pair: tuple[float | None, float | None]) -> str:
  """"R / P" with 3 decimals, "-" for a share without a denominator, "" for neither."""
  if pair == (None, None):
    return ""
  return " / ".join("-" if v is None else f"{v:.3f}" for v in pair)


def straggler_counts(history: list[dict[str, Any]]) -> tuple[float | None, float | None]:
  """Mean (invariant, slack) units over the clients that pruned, over all rounds."""
  inv, slack = [], []
  for r in history:
    for c in _pruning(r):
      if "invariant_units" in r:
        inv.append(r["invariant_units"][c])
        slack.append(r["slack_units"][c])
  if not inv:
    return None, None
  return float(np.mean(inv)), float(np.mean(slack))


def comparison_rows(runs: dict[str, tuple[dict, list]], target: float) -> list[tuple]:
  means = {name: summary_lib.mean_round_time(h) for name, (_, h) in runs.items()}
  rows = []
  for name, (summary, history) in runs.items():
    secure = summary.get("secagg") != "off"
    ref = methods.reference_run(secure, runs)
    acc = summary_lib.final_accuracy(history)
    ref_acc = summary_lib.final_accuracy(runs[ref][1]) if ref else None
    tta = time_to_accuracy(history, target)
    inv, slack = straggler_counts(history)
    keep = straggler_keep(history)
    recall, precision = slow_pruning(history)
    vs_all = decisions_vs_all_heard(history)
    spacing = eval_spacing(history)
    rows.append((
        name, "on" if secure else "off", means[name],
        "" if ref is None or ref == name else f"{100 * (1 - means[name] / means[ref]):+.1f}% vs {ref}",
        ("never" if tta is None else round(tta, 1)) if spacing == 1 else
        f"{'never' if tta is None else round(tta, 1)} (eval every {spacing})",
        "" if acc is None else round(acc, 4),
        "" if (acc is None or ref_acc is None or ref == name) else f"{100 * (acc - ref_acc):+.2f}",
        "" if keep is None else round(keep, 4),
        round(stragglers_per_round(history), 2), round(pruning_per_round(history), 2),
        "" if recall is None else round(recall, 3), "" if precision is None else round(precision, 3),
        recall_precision_cell(vs_all["flagged"]), recall_precision_cell(vs_all["pruning"]),
        "" if inv is None else round(inv, 1), "" if slack is None else round(slack, 1),
    ))
  return rows


def comparison_table(runs: dict[str, tuple[dict, list]], target: float) -> str:
  header = ["method", "SecAgg", "mean round s (virtual)", "round-time cut",
            f"virtual s to acc {target:g}", "final acc", "acc delta (points)",
            KEEP_COLUMN, "stragglers/round", "pruning/round", RECALL_COLUMN, PRECISION_COLUMN,
            SELF_ID_COLUMN, PRUNE_ID_COLUMN, "invariant units (stragglers)",
            "slack units (stragglers)"]
  return summary_lib.markdown_table(header, comparison_rows(runs, target))


def _mean_sd(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return ""
  sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
  return f"{np.mean(values):.4f} ± {sd:.4f}"


def seed_rows(runs_by_seed: dict[int, dict[str, tuple[dict, list]]], last: int = 5) -> list[tuple]:
  """Per method over seeds: mean ± sample standard deviation (ddof 1) of final accuracy, of
  the mean accuracy over the last `last` evaluations, of the final-round train loss and of
  the mean virtual round time; with the seeds and their count."""
  seeds = sorted(runs_by_seed)
  methods = list(runs_by_seed[seeds[0]])
  rows = []
  for name in methods:
    hist = [runs_by_seed[s][name][1] for s in seeds if name in runs_by_seed[s]]
    accs = [[r["test_accuracy"] for r in h if "test_accuracy" in r] for h in hist]
    rows.append((
        name, ",".join(str(s) for s in seeds if name in runs_by_seed[s]),
        _mean_sd([a[-1] if a else None for a in accs]),
        _mean_sd([float(np.mean(a[-last:])) if a else None for a in accs]),
        _mean_sd([h[-1]["train_loss"] for h in hist]),
        _mean_sd([summary_lib.mean_round_time(h) for h in hist]),
    ))
  return rows


def seed_table(runs_by_seed: dict[int, dict[str, tuple[dict, list]]], last: int = 5) -> str:
  header = ["method", "seeds", "final acc (mean ± sd)", f"mean acc, last {last} evals",
            "final train loss", "mean round s (virtual)"]
  return summary_lib.markdown_table(header, seed_rows(runs_by_seed, last))


def plot_accuracy(runs: dict[str, tuple[dict, list]], path: str | pathlib.Path) -> bool:
  """Accuracy vs virtual time PNG; False (nothing written) without matplotlib."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return False
  fig, ax = plt.subplots(figsize=(6, 4))
  for name, (_, history) in runs.items():
    evals = [r for r in history if "test_accuracy" in r]
    ax.plot([r["virtual_time_s"] for r in evals], [r["test_accuracy"] for r in evals], marker="o", label=name)
  ax.set_xlabel("virtual time (s)")
  ax.set_ylabel("test accuracy")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True
