"""The round's measurements record: one row of `metrics.jsonl` (schema: `docs/metrics.md`).

A round ends one of three ways, and each has one constructor here: `finished` (the model
moved), `aborted` (SecAgg could not finish: the model stays, the clock charges the work done)
and `skipped` (churn left fewer clients than the round needs). `apply` starts the row with
`start`, the stages add their own fields, and one of the three closes it. The loop
(`clipjax.experiment`) adds `true_stragglers`, the evaluation fields and the host seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipjax.clock import charges as charges_lib
from clipjax.clock import devices

Row = dict[str, Any]

# Per-client clock fields, in cohort order; `charges.metrics_fields` writes them and owns the list.
CLOCK_FIELDS = charges_lib.CLOCK_FIELDS


def start(round_index: int, num: int, cohort: np.ndarray, away: int | None,
          population: int) -> Row:
  """The fields every row has from the start: nobody is a straggler yet, everybody keeps all.

  Args:
    round_index: 0-based round; the row holds it 1-based.
    num: cohort clients taking part.
    cohort: int[num] their population ids.
    away: clients of the sampled cohort away this round (None: churn is off).
    population: K; the row lists the cohort only when it is not the whole population.
  """
  row: Row = {"round": round_index + 1, "stragglers": [], "keep_fraction": [1.0] * num}
  if away is not None:
    row["away"] = int(away)
  if num < population:
    row["cohort"] = np.asarray(cohort).tolist()
  return row


def skipped(row: Row, num: int, min_clients: int, virtual_time: float,
            server_seconds: float) -> Row:
  """Closes the row of a round that churn left with too few clients: nothing trains and the
  model stays; the round costs the server's seconds."""
  empty: list = []
  row.update({"skipped": f"{num} cohort clients available, fewer than the {min_clients} "
                         "this round needs", "train_loss": float("nan"),
              "round_time_s": server_seconds, "server_seconds": server_seconds,
              "virtual_time_s": virtual_time + server_seconds, "survivors": [],
              "invariant_units": [], "slack_units": [],
              **{k: empty for k in CLOCK_FIELDS}, "keep_fraction": [1.0] * num})
  return row


def aborted(row: Row, err, times: devices.ClientTimes, charged: charges_lib.Charges,
            round_s: float, virtual_time: float, server_seconds: float) -> Row:
  """Closes the row of a round SecAgg aborted (`secagg.RoundAborted` `err`)."""
  row.update({"aborted": str(err), "aborted_stage": err.stage,
              "aborted_participants": list(err.participants), "train_loss": float("nan"),
              "secagg_nonfinite": list(err.nonfinite),
              "secagg_too_few_holders": list(err.too_few_holders),
              "round_time_s": round_s, "virtual_time_s": virtual_time + round_s})
  row.update(charges_lib.metrics_fields(times, charged))
  row["survivors"] = [False] * len(times.total)
  row["server_seconds"] = server_seconds
  return row


def finished(row: Row, *, loss_sum: np.ndarray, num_seen: np.ndarray, keep: np.ndarray,
             invariant: np.ndarray, slack: np.ndarray, survivors: np.ndarray,
             times: devices.ClientTimes, charged: charges_lib.Charges, round_s: float,
             virtual_time: float, server_seconds: float) -> Row:
  """Closes the row of a round whose update reached the model.

  Invariant and slack unit counts are reported for the clients that pruned (keep < 1) only.
  """
  pruning = np.asarray(keep) < 1.0
  row.update({
      "train_loss": float(np.sum(loss_sum) / max(np.sum(num_seen), 1.0)),
      "round_time_s": round_s, "virtual_time_s": virtual_time + round_s,
      "invariant_units": np.where(pruning, invariant, 0).astype(int).tolist(),
      "slack_units": np.where(pruning, slack, 0).astype(int).tolist(),
      "survivors": np.asarray(survivors, bool).tolist(),
      "server_seconds": server_seconds,
  })
  row.update(charges_lib.metrics_fields(times, charged))
  return row
