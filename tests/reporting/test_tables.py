"""Comparison tables: each method against its own fedavg, time to accuracy and its spacing."""

import pathlib
import sys

import ml_collections

from clipjax.reporting import tables

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import compare  # noqa: E402


def _run(secagg, round_s, accs, every=1, stragglers=()):
  rows = []
  for i, acc in enumerate(accs):
    row = {"round": i + 1, "round_time_s": round_s, "virtual_time_s": round_s * (i + 1),
           "stragglers": list(stragglers), "keep_fraction": [0.5, 1.0],
           "invariant_units": [7, 0], "slack_units": [3, 0], "train_loss": 1.0}
    if (i + 1) % every == 0:
      row["test_accuracy"] = acc
    rows.append(row)
  return {"secagg": secagg}, rows


def test_insecure_runs_are_measured_against_fedavg_plain():
  runs = {"fedavg": _run("secagg+", 2.0, [0.5, 0.7]),
          "fedavg_plain": _run("off", 1.0, [0.5, 0.7]),
          "fluid": _run("off", 0.8, [0.6, 0.65], stragglers=[0]),
          "clip_compute": _run("secagg+", 1.5, [0.6, 0.72], stragglers=[0])}
  rows = {r[0]: r for r in tables.comparison_rows(runs, target=0.6)}
  assert rows["fluid"][3] == "+20.0% vs fedavg_plain"
  assert rows["clip_compute"][3] == "+25.0% vs fedavg"
  assert rows["fluid"][6] == "-5.00" and rows["clip_compute"][6] == "+2.00"
  assert rows["clip_compute"][4] == 1.5                   # first round at >= 0.6
  # keep fraction, flagged and pruning clients per round, units of the clients that prune
  # no ground truth and no all-heard fields here: those four columns stay empty
  assert rows["clip_compute"][7:] == (0.5, 1.0, 1.0, "", "", "", "", 7.0, 3.0)


def test_a_flagged_straggler_that_keeps_the_whole_model_is_counted_apart():
  """Client 1 flags itself but its rule keeps p = 1: it is a straggler, not a pruning client,
  and its 1.0 stays out of the keep fraction (which would otherwise read 0.75)."""
  runs = {"fedavg": _run("secagg+", 2.0, [0.5, 0.7]),
          "clip_compute": _run("secagg+", 1.5, [0.6, 0.72], stragglers=[0, 1])}
  rows = {r[0]: r for r in tables.comparison_rows(runs, target=0.6)}
  assert rows["clip_compute"][7:10] == (0.5, 2.0, 1.0)
  assert tables.straggler_keep(runs["clip_compute"][1]) == 0.5
  assert tables.pruning_per_round(runs["clip_compute"][1]) == 1.0


def test_time_to_accuracy_says_when_evaluations_are_spaced():
  runs = {"fedavg": _run("secagg+", 1.0, [0.1, 0.2, 0.3, 0.7], every=2)}
  (row,) = tables.comparison_rows(runs, target=0.6)
  assert row[4] == "4.0 (eval every 2)"


def test_compare_adds_fedavg_plain_beside_fluid():
  c = ml_collections.ConfigDict({"method": "fedavg", "secagg": {"enabled": True}})
  configs = compare.method_configs(c, ["fedavg", "fluid", "clip_compute"])
  assert list(configs) == ["fedavg", "fedavg_plain", "fluid", "clip_compute"]
  assert configs["fedavg_plain"].method == "fedavg" and not configs["fedavg_plain"].secagg.enabled
  assert not configs["fluid"].secagg.enabled and configs["clip_compute"].secagg.enabled
  assert list(compare.method_configs(c, ["fedavg"])) == ["fedavg"]


def test_seed_table_gives_mean_and_sample_sd_over_seeds():
  by_seed = {s: {"clip_compute": _run("secagg+", 1.0 + s, [0.5, acc])}
             for s, acc in ((0, 0.6), (1, 0.7), (2, 0.8))}
  (row,) = tables.seed_rows(by_seed, last=1)
  assert row[:3] == ("clip_compute", "0,1,2", "0.7000 ± 0.1000")
  assert row[5] == "2.0000 ± 1.0000"


def test_slow_clients_pruning_against_the_devices_from_round_2():
  """Round 1 has no reports (left out); rounds 2-3: slow devices 0 and 1; 0 prunes in both,
  1 only in round 3 and fast client 2 prunes once: recall 3/4, precision 3/4."""
  rows = [
      {"round": 1, "stragglers": [], "keep_fraction": [1.0] * 3, "true_stragglers": [0, 1]},
      {"round": 2, "stragglers": [0, 1, 2], "keep_fraction": [0.5, 1.0, 0.8],
       "true_stragglers": [0, 1]},
      {"round": 3, "stragglers": [0, 1], "keep_fraction": [0.5, 0.7, 1.0],
       "true_stragglers": [0, 1]},
      {"round": 4, "aborted": "x", "stragglers": [], "keep_fraction": [1.0] * 3,
       "true_stragglers": [0, 1]},
  ]
  assert tables.slow_pruning(rows) == (0.75, 0.75)
  assert tables.slow_pruning(rows[:1]) == (None, None)


def test_decisions_against_every_report_heard_pooled_from_round_2():
  """Round 2: all-heard flags {0, 1}, the clients flagged {0, 2}; round 3: all-heard {0}, the
  clients {0}. Flagged: recall 2/3, precision 2/3. Pruning (p < 1): round 2 all-heard prunes
  {0, 1}, the clients prune {0} (2 kept p = 1); round 3 {0} and {0}: recall 2/3, precision 1."""
  rows = [
      {"round": 1, "stragglers": [1], "keep_fraction": [1.0, 0.5, 1.0],
       "stragglers_all_heard": [], "pruning_all_heard": []},  # round 1: left out
      {"round": 2, "stragglers": [0, 2], "keep_fraction": [0.5, 1.0, 1.0],
       "stragglers_all_heard": [0, 1], "pruning_all_heard": [0, 1]},
      {"round": 3, "stragglers": [0], "keep_fraction": [0.6, 1.0, 1.0],
       "stragglers_all_heard": [0], "pruning_all_heard": [0]},
      {"round": 4, "aborted": "x", "stragglers": [], "keep_fraction": [1.0] * 3,
       "stragglers_all_heard": [2], "pruning_all_heard": [2]},
  ]
  got = tables.decisions_vs_all_heard(rows)
  assert got["flagged"] == (2 / 3, 2 / 3)
  assert got["pruning"] == (2 / 3, 1.0)
  assert tables.recall_precision_cell(got["pruning"]) == "0.667 / 1.000"
  old = [{k: v for k, v in r.items() if "all_heard" not in k} for r in rows]
  assert tables.decisions_vs_all_heard(old) == {"flagged": (None, None), "pruning": (None, None)}
  assert tables.recall_precision_cell((None, 0.5)) == "- / 0.500"
