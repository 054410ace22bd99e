"""The round's record (`clipjax.round.record`): each kind of row's fields, values and key order."""

import json
import math

import numpy as np
import pytest

from clipjax.clock import charges as charges_lib
from clipjax.clock import devices
from clipjax.round import record
from tests.toy import make_setting

CLOCK = ["download_s", "fit_s", "mask_s", "upload_s", "latency_s", "messages", "client_time_s"]


def _times():
  """Three clients' time components, chosen so every total is a short exact sum."""
  download = np.array([0.5, 0.25, 0.125])
  fit = np.array([1.0, 2.0, 3.0])
  blinding = np.array([0.0, 0.0625, 0.0])
  upload = np.array([0.25, 0.25, 0.5])
  latency = np.array([0.1, 0.1, 0.1])
  total = download + fit + blinding + upload + latency
  return devices.ClientTimes(download=download, fit=fit, blinding=blinding, upload=upload,
                             latency=latency, total=total, fit_full=fit * 2)


def _charged():
  return charges_lib.Charges(kept_units={"hidden": np.array([8, 4, 8])},
                             download_bytes=np.zeros(3), upload_bytes=np.zeros(3),
                             messages=np.array([5, 5, 5]), mask_words=np.zeros(3))


def test_start_lists_the_cohort_and_away_count_only_when_they_say_something():
  full = record.start(0, 3, np.arange(3), None, 3)
  assert list(full) == ["round", "stragglers", "keep_fraction"]
  assert full == {"round": 1, "stragglers": [], "keep_fraction": [1.0, 1.0, 1.0]}
  # A cohort of 2 of a population of 5, after churn took 1 of the 3 sampled.
  part = record.start(6, 2, np.array([1, 4], np.int64), np.int64(1), 5)
  assert list(part) == ["round", "stragglers", "keep_fraction", "away", "cohort"]
  assert part == {"round": 7, "stragglers": [], "keep_fraction": [1.0, 1.0], "away": 1,
                  "cohort": [1, 4]}
  assert type(part["away"]) is int and all(type(c) is int for c in part["cohort"])
  # Churn on but nobody away: the count 0 is still written (0 is not None).
  assert record.start(0, 3, np.arange(3), 0, 3)["away"] == 0
  # The whole population with churn off lists no cohort; a cohort smaller than it does.
  assert "cohort" not in record.start(0, 4, np.arange(4), None, 4)
  assert record.start(0, 4, np.arange(4), None, 9)["cohort"] == [0, 1, 2, 3]


def test_skipped_row_costs_the_server_seconds_and_has_empty_per_client_fields():
  row = record.start(2, 1, np.array([3]), 4, 5)
  row = record.skipped(row, 1, 2, virtual_time=10.0, server_seconds=0.125)
  assert list(row) == (["round", "stragglers", "keep_fraction", "away", "cohort", "skipped",
                        "train_loss", "round_time_s", "server_seconds", "virtual_time_s",
                        "survivors", "invariant_units", "slack_units"] + CLOCK)
  assert row["skipped"] == "1 cohort clients available, fewer than the 2 this round needs"
  assert math.isnan(row["train_loss"])
  assert row["round_time_s"] == 0.125 and row["server_seconds"] == 0.125
  assert row["virtual_time_s"] == 10.125
  assert row["keep_fraction"] == [1.0] and row["stragglers"] == []
  for key in ["survivors", "invariant_units", "slack_units"] + CLOCK:
    assert row[key] == [], key


class _Aborted:
  """What `record.aborted` reads of a `secagg.RoundAborted`."""

  stage = "masked_input"
  participants = (0, 2)
  nonfinite = (1,)
  too_few_holders = ()

  def __str__(self):
    return "round 4 aborted at masked_input: 2 clients sent, fewer than t=3"


def test_aborted_row_names_the_stage_and_charges_the_work_done():
  t, charged = _times(), _charged()
  row = record.start(3, 3, np.arange(3), None, 3)
  row = record.aborted(row, _Aborted(), t, charged, round_s=4.0, virtual_time=1.5,
                       server_seconds=0.25)
  assert list(row) == (["round", "stragglers", "keep_fraction", "aborted", "aborted_stage",
                        "aborted_participants", "train_loss", "secagg_nonfinite",
                        "secagg_too_few_holders", "round_time_s", "virtual_time_s"] + CLOCK
                       + ["survivors", "server_seconds"])
  assert row["aborted"] == "round 4 aborted at masked_input: 2 clients sent, fewer than t=3"
  assert row["aborted_stage"] == "masked_input"
  assert row["aborted_participants"] == [0, 2]
  assert row["secagg_nonfinite"] == [1] and row["secagg_too_few_holders"] == []
  assert math.isnan(row["train_loss"])
  assert row["round_time_s"] == 4.0 and row["virtual_time_s"] == 5.5
  assert row["survivors"] == [False, False, False] and row["server_seconds"] == 0.25
  assert row["fit_s"] == [1.0, 2.0, 3.0] and row["mask_s"] == [0.0, 0.0625, 0.0]
  assert row["messages"] == [5, 5, 5]
  assert row["client_time_s"] == pytest.approx([1.85, 2.6625, 3.725], abs=1e-9)
  json.dumps(row)  # the row is written as JSON as it is


def test_finished_row_means_the_loss_over_examples_and_counts_units_of_pruning_clients_only():
  t, charged = _times(), _charged()
  row = record.start(0, 3, np.arange(3), None, 3)
  row["stragglers"], row["keep_fraction"] = [1], [1.0, 0.5, 1.0]  # what the decision wrote
  row = record.finished(
      row, loss_sum=np.array([6.0, 3.0, 1.5], np.float32), num_seen=np.array([4.0, 2.0, 2.0]),
      keep=np.array([1.0, 0.5, 1.0], np.float32), invariant=np.array([7, 3, 5]),
      slack=np.array([2, 1, 9]), survivors=np.array([1, 1, 0]), times=t, charged=charged,
      round_s=3.25, virtual_time=2.0, server_seconds=0.25)
  assert list(row) == (["round", "stragglers", "keep_fraction", "train_loss", "round_time_s",
                        "virtual_time_s", "invariant_units", "slack_units", "survivors",
                        "server_seconds"] + CLOCK)
  assert row["train_loss"] == (6.0 + 3.0 + 1.5) / (4 + 2 + 2)     # 1.3125: exact in binary
  assert type(row["train_loss"]) is float
  assert row["invariant_units"] == [0, 3, 0]    # counts of clients that kept all are noise
  assert row["slack_units"] == [0, 1, 0]
  assert all(type(v) is int for v in row["invariant_units"] + row["slack_units"])
  assert row["survivors"] == [True, True, False]
  assert row["round_time_s"] == 3.25 and row["virtual_time_s"] == 5.25
  assert row["server_seconds"] == 0.25 and row["messages"] == [5, 5, 5]
  assert row["download_s"] == [0.5, 0.25, 0.125] and row["latency_s"] == [0.1, 0.1, 0.1]
  json.dumps(row)
  # Nobody saw an example: the loss is 0 / 1, not a division by zero.
  empty = record.finished(
      record.start(0, 3, np.arange(3), None, 3), loss_sum=np.zeros(3), num_seen=np.zeros(3),
      keep=np.ones(3), invariant=np.zeros(3), slack=np.zeros(3), survivors=np.ones(3),
      times=t, charged=charged, round_s=1.0, virtual_time=0.0, server_seconds=0.0)
  assert empty["train_loss"] == 0.0


def test_clock_fields_are_the_ones_the_record_writes():
  assert list(record.CLOCK_FIELDS) == CLOCK


def test_a_real_fedavg_rows_keys_in_order():
  # The round adds its host seconds between the straggler fields and the closing ones.
  algo, params, _, _ = make_setting("fedavg", [5, 3], compute_slow=0)
  _, row = algo.apply(algo.init(params), 0)
  assert list(row) == (["round", "stragglers", "keep_fraction", "host_seconds_train",
                        "host_seconds_sum", "train_loss", "round_time_s", "virtual_time_s",
                        "invariant_units", "slack_units", "survivors", "server_seconds"]
                       + CLOCK + ["server_s_parts"])
  json.dumps(row)
