"""Sweep tables: t-intervals, paired deltas, references and the files written, on synthetic runs."""

import json
import math

import pytest

from clipjax.reporting import sweep_plots, sweep_report
from clipjax.reporting import sweep_tables


def test_t_interval_of_known_values():
  # mean 0.7, sample sd 0.1, t_{0.975, 2} = 4.302653: half width 0.248414 (z = 1.96 or the
  # population sd would give other numbers).
  iv = sweep_tables.t_interval([0.6, 0.7, 0.8])
  assert iv.n == 3
  assert iv.mean == pytest.approx(0.7, abs=1e-12)
  assert iv.low == pytest.approx(0.4515862288, abs=1e-9)
  assert iv.high == pytest.approx(0.9484137712, abs=1e-9)


def test_t_interval_of_two_values_uses_one_degree_of_freedom():
  iv = sweep_tables.t_interval([1.0, 2.0])  # t_{0.975, 1} = 12.706205, sd/sqrt(2) = 0.5
  assert (iv.low, iv.high) == (pytest.approx(1.5 - 6.3531024, abs=1e-6),
                               pytest.approx(1.5 + 6.3531024, abs=1e-6))


def test_t_interval_of_one_value_has_no_bounds():
  iv = sweep_tables.t_interval([0.42])
  assert iv.mean == 0.42 and iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.high)
  with pytest.raises(ValueError, match="at least one"):
    sweep_tables.t_interval([])


def test_paired_delta_pairs_by_seed():
  # Differences 0.02, 0.01, 0.05: mean 0.026667, sd 0.020817. Unpaired, the spread of the
  # accuracies themselves (sd 0.1) would give an interval ten times wider.
  ref = {2: 0.70, 0: 0.50, 1: 0.60, 7: 0.99}  # seed 7 has no partner and is left out
  method = {0: 0.52, 1: 0.61, 2: 0.75}
  iv = sweep_tables.paired_delta(method, ref)
  assert iv.n == 3
  assert iv.mean == pytest.approx(0.0266666667, abs=1e-9)
  assert iv.low == pytest.approx(-0.0250447835, abs=1e-9)
  assert iv.high == pytest.approx(0.0783781168, abs=1e-9)
  assert sweep_tables.paired_delta({0: 0.5}, {1: 0.5}) is None


def _history(round_s, accs, stragglers=(), keep=0.5):
  rows = []
  for i, acc in enumerate(accs):
    rows.append({"round": i + 1, "round_time_s": round_s, "virtual_time_s": round_s * (i + 1),
                 "stragglers": list(stragglers), "keep_fraction": [keep, 1.0],
                 "invariant_units": [7, 0], "slack_units": [3, 0], "train_loss": 1.0,
                 "test_accuracy": acc})
  return rows


def _run(method, seed, secure, round_s, accs, stragglers=()):
  return sweep_tables.Run("compute", method, seed, _history(round_s, accs, stragglers),
                          {"secagg": "secagg+" if secure else "off"},
                          {"devices": {"fast_flops": 0.0}})


def _by_method():
  return {
      "fedavg": {s: _run("fedavg", s, True, 2.0, [0.5, a]) for s, a in ((0, 0.60), (1, 0.70))},
      "fedavg_plain": {s: _run("fedavg_plain", s, False, 1.0, [0.5, 0.6]) for s in (0, 1)},
      "fluid": {s: _run("fluid", s, False, 0.8, [0.4, 0.55], [0]) for s in (0, 1)},
      "clip_compute": {s: _run("clip_compute", s, True, 1.5, [0.65, a], [0])
                       for s, a in ((0, 0.62), (1, 0.74))},
  }


def test_rows_measure_each_method_against_its_reference():
  rows = {r[0]: r for r in sweep_tables.scenario_rows(_by_method(), target=0.6)}
  assert rows["clip_compute"][4] == "+25.0% vs fedavg"
  assert rows["fluid"][4] == "+20.0% vs fedavg_plain"
  assert rows["fedavg"][4] == "" and rows["fedavg"][8] == ""
  # clip reaches 0.6 at the end of round 1 (1.5 s), fedavg at round 2 (4.0 s).
  assert rows["clip_compute"][5] == "1.5" and rows["clip_compute"][6] == "+62.5% vs fedavg"
  assert rows["fluid"][5] == "never" and rows["fluid"][6] == ""
  # Per-seed deltas +2 and +4 points: mean +3, t_{0.975,1} x sd / sqrt(2) = 12.706 x 1 = 12.71.
  assert rows["clip_compute"][8] == "+3.00 [-9.71, +15.71] (n=2)"
  assert rows["clip_compute"][7] == "0.6800 [-0.0824, 1.4424] (n=2)"
  # Rows without the all-heard fields (written before them) leave those two columns empty.
  assert rows["clip_compute"][9:18] == (0.5, 1.0, 1.0, "", "", "", "", 7.0, 3.0)
  assert rows["clip_compute"][18] == "10 (default)"  # the default fast tier, 10 GFLOP/s


def _write_run(root, name, history, finished=True):
  folder = root / name
  folder.mkdir(parents=True)
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
  if finished:
    (folder / "summary.json").write_text(json.dumps({"secagg": "secagg+"}))
  (folder / "config.json").write_text(json.dumps({
      "num_clients": 2, "rounds": len(history), "data": {"name": "femnist"},
      "model": {"name": "leaf_cnn", "width": 0.25},
      "devices": {"compute_slow": 1, "network_slow": 0, "both_slow": 0, "fast_flops": 0.0}}))


def test_load_group_and_write(tmp_path):
  _write_run(tmp_path, "compute/clip_compute/seed1", _history(1.5, [0.6, 0.7], [0]))
  _write_run(tmp_path, "compute/fedavg/seed1", _history(2.0, [0.5, 0.6]), finished=False)
  _write_run(tmp_path, "compute/fedavg/seed0", _history(2.0, [0.5, 0.65]))
  _write_run(tmp_path, "compute_network/fedavg/seed0", _history(3.0, [0.5, 0.6]))
  (tmp_path / "compute" / "notes").mkdir()  # not a run folder: ignored
  groups = sweep_tables.group(sweep_tables.load_sweep(tmp_path))
  assert list(groups) == ["compute", "compute_network"]
  assert list(groups["compute"]) == ["fedavg", "clip_compute"]  # the paper's order
  assert list(groups["compute"]["fedavg"]) == [0, 1]
  table_file, plots = sweep_report.write(tmp_path, tmp_path / "out", target=0.6)
  text = table_file.read_text()
  assert text.count("## compute") == 2 and "1 compute, 0 network (4G), 0 both" in text
  assert "| fedavg | on | 0,1 (n=2), unfinished: 1 |" in text
  if sweep_plots.available():
    assert {p.name for p in plots} >= {"compute_accuracy_vs_time.png", "compute_unit_counts.png"}
    assert all(p.stat().st_size > 0 for p in plots)
  else:
    assert plots is None


def test_compact_markdown_keeps_only_the_comparison_columns(tmp_path):
  _write_run(tmp_path, "compute/fedavg/seed0", _history(2.0, [0.5, 0.65]))
  _write_run(tmp_path, "compute/clip_compute/seed0", _history(1.5, [0.6, 0.7], [0]))
  groups = sweep_tables.group(sweep_tables.load_sweep(tmp_path))
  full = sweep_tables.markdown(groups, target=0.6)
  compact = sweep_tables.markdown(groups, target=0.6, compact=True)
  head = [line for line in compact.splitlines() if line.startswith("| method")][0]
  cells = [c.strip() for c in head.strip("|").split("|")]
  assert len(cells) == len(sweep_tables.COMPACT)
  assert all(any(c.startswith(k) for k in sweep_tables.COMPACT) for c in cells)
  assert "invariant units" in full and "invariant units" not in compact
  rows = [line for line in compact.splitlines() if line.startswith("| clip_compute")]
  assert len(rows) == 1 and rows[0].count("|") == len(cells) + 1


def test_empty_root_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no runs under .*reproduce.py"):
    sweep_tables.load_sweep(tmp_path)
