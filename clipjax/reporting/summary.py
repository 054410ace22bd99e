"""Host side: progress bar, run summaries and the printed table.

Called only by the loop in `clipjax.experiment` (and the table scripts).
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

import numpy as np
import tqdm


def progress(rounds: int, desc: str, start: int = 0):
  return tqdm.tqdm(range(start, rounds), desc=desc, unit="round", file=sys.stderr,
                   dynamic_ncols=True, leave=False, initial=start, total=rounds)


def update_progress(bar, row: dict[str, Any]) -> None:
  post = {"loss": f"{row['train_loss']:.3f}", "round_s": f"{row['round_time_s']:.1f}"}
  if "test_accuracy" in row:
    post["acc"] = f"{row['test_accuracy']:.3f}"
  bar.set_postfix(post, refresh=False)


def mean_round_time(history: list[dict[str, Any]]) -> float:
  """Mean virtual round time (s) over the rows, aborted and skipped rounds included."""
  return float(np.mean([r["round_time_s"] for r in history]))


def final_accuracy(history: list[dict[str, Any]]) -> float | None:
  """Test accuracy of the last evaluated row (None without evaluations)."""
  evals = [r["test_accuracy"] for r in history if "test_accuracy" in r]
  return evals[-1] if evals else None


def summarize(spec, history: list[dict[str, Any]], *, num_params: int, clients: int) -> dict[str, Any]:
  """Run-level numbers: mean virtual round time, final accuracy, host seconds."""
  return {
      "dataset": spec.data.name, "model": spec.model.name, "width": spec.model.width,
      "method": spec.method, "secagg": spec.secagg.protocol if spec.secagg.enabled else "off",
      "clients": clients, "rounds": len(history), "params": num_params,
      "mean_round_time_s": mean_round_time(history),
      "virtual_time_s": history[-1]["virtual_time_s"] if history else 0.0,
      "final_train_loss": history[-1]["train_loss"] if history else float("nan"),
      "final_test_accuracy": final_accuracy(history),
      "host_seconds": float(sum(r["host_seconds"] for r in history)),
      "calibration": spec.devices.calibration, "fast_flops": spec.devices.fast_flops,
      "slow_flops": spec.devices.fast_flops * spec.devices.slow_compute_ratio,
  }


def markdown_table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
  header = list(header)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in rows:
    lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
  return "\n".join(lines)


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
  return str(v)


def print_summary(summary: dict[str, Any], history: list[dict[str, Any]]) -> None:
  rows = [(r["round"], r["train_loss"], r.get("test_accuracy", ""), r["round_time_s"],
           r["virtual_time_s"], len(r["stragglers"]), r["host_seconds"])
          for r in history if "test_accuracy" in r]
  print()
  print(markdown_table(["round", "train loss", "test acc", "round s (virtual)",
                        "virtual s", "stragglers", "host s"], rows))
  print()
  acc = summary["final_test_accuracy"]
  print(markdown_table(
      ["dataset", "model", "method", "secagg", "clients", "rounds", "mean round s",
       "final acc", "host s"],
      [(summary["dataset"], f"{summary['model']} x{summary['width']}", summary["method"],
        summary["secagg"], summary["clients"], summary["rounds"], summary["mean_round_time_s"],
        "" if acc is None else acc, summary["host_seconds"])]))
