"""Comparison tables and plots from run folders (`metrics.jsonl` + `summary.json`).

Host side only. Round time is the virtual (simulated) time of DESIGN 2.1; speed-up is
relative to the `fedavg` row of the same table.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from clipjax import report


def load_run(workdir: str | pathlib.Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  folder = pathlib.Path(workdir)
  metrics = folder / "metrics.jsonl"
  if not metrics.exists():
    raise ValueError(f"{metrics} does not exist; run scripts/train.py with --workdir={folder} first.")
  history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
  summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
  return summary, history


def time_to_accuracy(history: list[dict[str, Any]], target: float) -> float | None:
  """Virtual seconds until the first evaluation at or above `target` (None if never)."""
  for row in history:
    if row.get("test_accuracy", -1.0) >= target:
      return row["virtual_time_s"]
  return None


def comparison_rows(runs: dict[str, tuple[dict, list]], target: float) -> list[tuple]:
  base = runs.get("fedavg")
  base_round = np.mean([r["round_time_s"] for r in base[1]]) if base else None
  base_acc = _final_acc(base[1]) if base else None
  rows = []
  for name, (_, history) in runs.items():
    mean_round = float(np.mean([r["round_time_s"] for r in history]))
    acc = _final_acc(history)
    tta = time_to_accuracy(history, target)
    rows.append((
        name, mean_round,
        "" if base_round is None else f"{100 * (1 - mean_round / base_round):+.1f}%",
        "never" if tta is None else round(tta, 1),
        "" if acc is None else round(acc, 4),
        "" if (acc is None or base_acc is None) else f"{100 * (acc - base_acc):+.2f}",
        _straggler_keep(history),
        round(float(np.mean([len(r["stragglers"]) for r in history])), 2),
    ))
  return rows


def comparison_table(runs: dict[str, tuple[dict, list]], target: float) -> str:
  header = ["method", "mean round s (virtual)", "round-time cut vs fedavg",
            f"virtual s to acc {target:g}", "final acc", "acc delta (points)",
            "straggler keep fraction", "stragglers/round"]
  return report.markdown_table(header, comparison_rows(runs, target))


def _straggler_keep(history) -> float | str:
  """Mean keep fraction p over the clients that decided they were stragglers."""
  kept = [r["keep_fraction"][i] for r in history for i in r.get("stragglers", [])]
  return round(float(np.mean(kept)), 4) if kept else ""


def _final_acc(history):
  evals = [r["test_accuracy"] for r in history if "test_accuracy" in r]
  return evals[-1] if evals else None


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
