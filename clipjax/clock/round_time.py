"""Every rule that turns per-client seconds into a round's time (DESIGN 2.1).

A finished round lasts as long as its slowest surviving client plus the server's seconds
(`round_time`), and can be recomputed from the per-client components that `metrics.jsonl`
holds (`recompute_round_time`). An aborted SecAgg round lasts as long as its slowest
participant's work up to the stage that failed (`aborted_round_seconds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipjax.clock import charges
from clipjax.clock.devices import ClientTimes


def round_time(times: ClientTimes, survivors=None, server_s: float = 0.0) -> float:
  """Round time = max total over surviving clients + server time.

  Args:
    times: this round's `ClientTimes`.
    survivors: bool [C]; clients that dropped out do not hold the round up. None: everybody.
    server_s: server-side seconds (aggregation, unmasking).

  Raises:
    ValueError: if no client survived or the shape is wrong.
  """
  total = np.asarray(times.total)
  survivors = np.ones(total.shape, bool) if survivors is None else np.asarray(survivors, bool)
  if survivors.shape != total.shape:
    raise ValueError(f"survivors has shape {survivors.shape}, expected {total.shape}")
  if not survivors.any():
    raise ValueError("round_time needs at least one surviving client")
  return float(np.max(total[survivors]) + server_s)


# What a client that took part in an aborted round has spent, by the stage that failed (names
# of the per-client time components of the virtual clock, DESIGN 2.1). Training starts after
# AdvertiseKeys (the time broadcast needs the keys), so an abort there costs the download and
# the messages; a ShareKeys abort also costs the training; from MaskedInputCollection on, the
# clients have also masked and uploaded. Latency is charged for every protocol message, a
# pessimistic choice: an aborted round never looks cheaper than it was.
ABORT_COST = {
    "advertise_keys": ("download", "latency"),
    "share_keys": ("download", "fit", "latency"),
    "masked_input": ("download", "fit", "blinding", "upload", "latency"),
    "unmasking": ("download", "fit", "blinding", "upload", "latency"),
}


def aborted_round_seconds(times: ClientTimes, stage: str, participants: Sequence[int],
                          server_seconds: float = 0.0) -> float:
  """Virtual seconds of an aborted round: the slowest participant's cost (`ABORT_COST`).

  Args:
    times: per-client time components of this round.
    stage: the SecAgg stage that failed (`secagg.STAGES`, the `RoundAborted.stage`).
    participants: the clients that took part up to the abort (`RoundAborted.participants`).
    server_seconds: server time added to every round.
  """
  if not participants:
    return float(server_seconds)
  cost = sum(np.asarray(getattr(times, part), np.float64) for part in ABORT_COST[stage])
  return float(np.max(np.broadcast_to(cost, np.shape(times.total))[list(participants)])
               + server_seconds)


def recompute_round_time(row: dict) -> float:
  """A round's time from its per-client components in `metrics.jsonl` alone (DESIGN 2.1).

  Aborted rounds are charged by `aborted_round_seconds` and are not recomputed here.
  """
  total = sum(np.asarray(row[field]) for field in charges.TIME_FIELDS)
  survivors = np.asarray(row["survivors"], bool)
  return float(np.max(total[survivors], initial=0.0) + row["server_seconds"])
