"""The studies beyond the paper (configs/studies/): their run grids and their tables."""

import json
import types

import pytest

from clipjax.reporting import study_tables, sweep_report
from configs.studies import churn, lying, lying_femnist, straggler_info
from configs.studies import invariance as invariance_study
from configs.studies import straggler_info_femnist


def test_lying_grid_runs_fedavg_once_per_seed_and_every_rule_per_setting():
  runs = dict(lying.get_sweep(seeds=[0, 1]))
  names = list(runs)
  assert names.count("honest/fedavg/seed0") == 1 and "liars0.3_x10/fedavg/seed0" not in runs
  per_seed = 1 + (1 + len(lying.FRACTIONS) * len(lying.FACTORS)) * 2 * 2
  assert len(names) == 2 * per_seed
  c = runs["liars0.3_x0.1/clip_network+plausible/seed1"]
  assert (c.reports.liar_fraction, c.reports.liar_factor, c.reports.rule) == (0.3, 0.1, "plausible")
  assert c.method == "clip_network" and c.seed == 1 and c.secagg.enabled
  assert c.data.name == "cifar10" and c.num_clients == 10
  assert (c.devices.compute_slow, c.devices.network_slow, c.devices.both_slow) == (1, 0, 1)
  honest = runs["honest/clip_compute/seed0"]
  assert honest.reports.liar_fraction == 0.0 and honest.reports.rule == "quantile"
  femnist = dict(lying_femnist.get_sweep(seeds=[0]))["liars0.1_x0.1/clip_compute/seed0"]
  assert femnist.data.name == "femnist" and femnist.num_clients == 20
  assert (femnist.devices.compute_slow, femnist.devices.network_slow,
          femnist.devices.both_slow) == (2, 1, 1)
  only = dict(lying.get_sweep(seeds=[0], scenarios=["liars0.1_x10"]))
  assert sorted(only) == sorted(["honest/fedavg/seed0"] + [f"liars0.1_x10/{m}/seed0" for m in (
      "clip_compute", "clip_compute+plausible", "clip_network", "clip_network+plausible")])


def test_straggler_info_grid_compares_reports_with_histograms_under_secagg_plus_only():
  runs = dict(straggler_info.get_sweep(seeds=[1]))
  assert sorted(runs) == sorted(
      ["secagg/fedavg/seed1", "secagg/clip_compute/seed1", "secagg+k8/fedavg/seed1",
       "secagg+k8/clip_compute/seed1", "secagg+k8/clip_compute+histogram/seed1",
       "secagg+k8/clip_compute+histogram64/seed1"])
  plain, hist = runs["secagg+k8/clip_compute/seed1"], runs["secagg+k8/clip_compute+histogram/seed1"]
  assert plain.clip.straggler_info == "neighbours" and hist.clip.straggler_info == "histogram"
  for c in runs.values():  # as the study ran, whatever the defaults are now
    assert (c.clip.score, c.clip.threshold_init, c.clip.broadcast) == (
        "max_relative", "min", "own_message")
  assert hist.clip.histogram_bins == 256
  assert runs["secagg+k8/clip_compute+histogram64/seed1"].clip.histogram_bins == 64
  assert (hist.secagg.protocol, hist.secagg.degree, hist.num_clients, hist.rounds) == (
      "secagg+", 8, 20, 6)
  assert runs["secagg/clip_compute/seed1"].secagg.protocol == "secagg"
  assert (hist.devices.compute_slow, hist.local_epochs, hist.data.name) == (4, 1, "cifar10")
  f = dict(straggler_info_femnist.get_sweep(seeds=[0]))["secagg+/clip_compute+histogram/seed0"]
  assert (f.data.name, f.num_clients, f.devices.compute_slow, f.secagg.degree) == (
      "femnist", 50, 10, 0)  # k from the analysis


def test_churn_grid_samples_cohorts_of_the_population():
  runs = dict(churn.get_sweep(seeds=[2]))
  assert len(runs) == len(churn.COHORT_FRACTIONS) * len(churn.METHODS)
  c = runs["cohort10/clip_compute+server/seed2"]
  assert (c.num_clients, c.cohort_size, c.unavailable_rate) == (50, 5, 0.2)
  assert c.method == "clip_compute" and c.clip.reference == "server"
  assert runs["cohort100/clip_compute/seed2"].clip.reference == "last_seen"
  assert runs["cohort50/random/seed2"].cohort_size == 25
  assert runs["cohort50/random/seed2"].devices.compute_slow == 10
  small = dict(churn.get_sweep(seeds=[0], overrides={"num_clients": 10}))
  assert small["cohort50/fedavg/seed0"].cohort_size == 5


def _write_run(root, setting, method, seed, round_s, acc, stragglers=(), finished=True,
               loss=None, units=(3, 1), config=None):
  folder = root / setting / method / f"seed{seed}"
  folder.mkdir(parents=True)
  rows = [{"round": r + 1, "round_time_s": t, "virtual_time_s": sum(round_s[:r + 1]),
           "test_accuracy": a, "test_loss": (loss or [1.0] * len(acc))[r],
           "stragglers": list(stragglers), "keep_fraction": [0.5, 1.0],
           "invariant_units": [units[0], 0], "slack_units": [units[1], 0]}
          for r, (t, a) in enumerate(zip(round_s, acc))]
  (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  if config is not None:
    (folder / "config.json").write_text(json.dumps(config))
  if finished:
    (folder / "summary.json").write_text(json.dumps({"secagg": "secagg+"}))


def test_lying_table_measures_every_cell_against_honest_fedavg(tmp_path):
  for seed, (fed_acc, clip_acc) in enumerate([(0.5, 0.52), (0.6, 0.61)]):
    _write_run(tmp_path, "honest", "fedavg", seed, [2.0, 2.0], [0.3, fed_acc])
    _write_run(tmp_path, "liars0.3_x10", "clip_compute", seed, [1.5, 1.5], [0.3, clip_acc], [0])
  # a run still in progress (no summary) would drag its cell towards its first rounds
  _write_run(tmp_path, "liars0.3_x10", "clip_compute", 2, [9.0], [0.1], [0], finished=False)
  table = study_tables.lying_table(tmp_path, ["clip_compute"], ["quantile", "plausible"], 0.5)
  assert "Left out, not finished (1): liars0.3_x10/clip_compute/seed2" in table
  row = [line for line in table.splitlines() if line.startswith("| 0.3 | 10 |")][0]
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[2] == "+25.0%"                  # 1 - 1.5 / 2.0
  assert cells[3].startswith("+1.50 [")        # mean of +2 and +1 points, paired by seed
  assert cells[4] == "1.00" and cells[5:] == ["", "", "", ""]  # the plausible runs are absent
  alone = tmp_path / "no_reference"
  _write_run(alone, "liars0.3_x10", "clip_compute", 0, [1.5], [0.3])
  with pytest.raises(ValueError, match="no finished honest/fedavg"):
    study_tables.lying_table(alone, ["clip_compute"], ["quantile"], 0.5)


def test_churn_table_rows_per_cohort_and_method(tmp_path):
  _write_run(tmp_path, "cohort10", "fedavg", 0, [1.0], [0.4])
  _write_run(tmp_path, "cohort10", "clip_compute", 0, [0.8], [0.45], [0])
  _write_run(tmp_path, "cohort100", "fedavg", 0, [2.0], [0.6])
  _write_run(tmp_path, "cohort100", "clip_compute", 0, [0.1], [0.1], finished=False)
  table = study_tables.churn_table(tmp_path, ["fedavg", "clip_compute"], 0.42)
  lines = [line for line in table.splitlines() if line.startswith("| 10% |")
           or line.startswith("| 100% |")]
  assert [line.split("|")[2].strip() for line in lines] == ["fedavg", "clip_compute", "fedavg"]
  assert "Left out, not finished (1): cohort100/clip_compute/seed0" in table
  clip = [c.strip() for c in lines[1].strip("|").split("|")]
  assert clip[4].startswith("+5.00") and clip[6] == "+20.0%" and clip[9] == "3.0"


def test_a_sweep_file_names_its_grid_table_and_the_report_puts_it_first(tmp_path):
  for seed, (fed_acc, clip_acc) in enumerate([(0.5, 0.52), (0.6, 0.61)]):
    _write_run(tmp_path, "honest", "fedavg", seed, [2.0, 2.0], [0.3, fed_acc])
    _write_run(tmp_path, "liars0.3_x10", "clip_compute", seed, [1.5, 1.5], [0.3, clip_acc], [0])
  grid = study_tables.grid_table(lying.STUDY_TABLE, tmp_path, 0.5)
  assert grid == study_tables.lying_table(tmp_path, lying.METHODS, lying.RULES, 0.5)
  assert lying_femnist.STUDY_TABLE == lying.STUDY_TABLE and churn.STUDY_TABLE["kind"] == "churn"

  # a loaded sweep file, named as configs.paper.sweep.load_sweep_file names it
  sweep_file = types.SimpleNamespace(__name__="sweep_file_lying", STUDY_TABLE=lying.STUDY_TABLE)
  preface = sweep_report.study_preface(sweep_file, tmp_path, 0.5)
  assert preface == f"# lying\n\n{grid}\n"
  table_file, _ = sweep_report.write(tmp_path, tmp_path / "out", 0.5, plots=False,
                                     preface=preface)
  assert table_file.read_text().startswith(preface)
  assert sweep_report.study_preface(object(), tmp_path, 0.5) == ""   # a paper sweep: no grid
  with pytest.raises(ValueError, match="kind 'other'"):
    study_tables.grid_table({"kind": "other"}, tmp_path, 0.5)


def test_published_studies_keep_the_rules_they_ran_with():
  # Defaults changed after these studies were published (issues 24, 27): their runs pin the
  # neighbours' reports in their own message, the max_relative score with the min threshold,
  # the graph from the seed alone and a server charged no work, so their stored runs stay
  # finished and their tables reproducible; an override still wins.
  from configs.studies import population, straggler_info
  for sweep, its_rules in ((lying.get_sweep(seeds=[0]), True), (churn.get_sweep(seeds=[0]), True),
                           (population.get_sweep(seeds=[0]), True),
                           (straggler_info.get_sweep(seeds=[0]), False)):  # it sets its own
    for name, c in sweep:
      # The server's work was charged only after all four were published; every method reads it.
      assert c.devices.server_speedup == 0.0, name
      if c.method in ("fedavg", "fluid") or not its_rules:
        continue  # fedavg and fluid read none of the keys below (unread_keys)
      assert (c.clip.straggler_info, c.clip.broadcast, c.clip.score, c.clip.threshold_init,
              c.secagg.graph_randomness) == (
          "neighbours", "own_message", "max_relative", "min", "seed"), name
  (_, c), *_ = lying.get_sweep(seeds=[0], scenarios=["liars0.1_x10"],
                               overrides={"clip.score": "relative_l2"})[1:]
  assert c.clip.score == "relative_l2"


def test_invariance_study_compares_criteria_at_one_keep_fraction():
  from configs.studies import invariance, invariance_shakespeare
  runs = dict(invariance.get_sweep(seeds=[0]))
  # fedavg prunes nothing, so one reference run per seed serves both keep fractions
  assert len(runs) == 1 + 2 * len(invariance.CRITERIA)
  assert [n for n in runs if "/fedavg/" in n] == ["reference/fedavg/seed0"]
  for name, c in runs.items():
    scenario, method, _ = name.split("/")
    assert c.data.test_clients == "all" and c.devices.compute_slow == 4, name
    assert c.clip.fixed_keep == (0.0 if method == "fedavg" else float(scenario[4:])), name
    assert c.clip.score == ("max_relative" if method.endswith("+max_relative")
                            else "relative_l2"), name
  assert runs["keep0.7/taylor/seed0"].method == "taylor"
  thresholds = dict(invariance_shakespeare.get_sweep(seeds=[1], scenarios=["threshold0.5"]))
  assert sorted(thresholds) == ["reference/fedavg/seed1", "threshold0.5/clip_compute/seed1"]
  c = thresholds["threshold0.5/clip_compute/seed1"]
  assert (c.clip.threshold_scale, c.clip.fixed_keep, c.data.name) == (0.5, 0.5, "shakespeare")
  only = dict(invariance.get_sweep(seeds=[2], methods=["clip_compute+max_relative"]))
  assert sorted(only) == ["keep0.5/clip_compute+max_relative/seed2",
                          "keep0.7/clip_compute+max_relative/seed2"]


def test_criteria_table_pairs_each_criterion_with_fedavg_random_and_the_unscaled_threshold(
    tmp_path):
  keep = {"clip": {"fixed_keep": 0.5}}
  for seed, (fed, rnd, inv, half) in enumerate([(0.60, 0.50, 0.54, 0.52), (0.70, 0.58, 0.60, 0.61)]):
    _write_run(tmp_path, "reference", "fedavg", seed, [1.0], [fed], config={})
    _write_run(tmp_path, "keep0.5", "random", seed, [1.0], [rnd], [0], loss=[2.0], config=keep)
    _write_run(tmp_path, "keep0.5", "clip_compute", seed, [1.0], [inv], [0], loss=[1.9 - seed / 10],
               units=(5, 1), config=keep)
    _write_run(tmp_path, "threshold0.5", "clip_compute", seed, [1.0], [half], [0],
               units=(2, 4), config={"clip": {"fixed_keep": 0.5, "threshold_scale": 0.5}})
  _write_run(tmp_path, "keep0.7", "random", 0, [1.0], [0.1], [0], finished=False, config={})
  table = study_tables.criteria_table(tmp_path, ["clip_compute", "random"])
  row = lambda prefix: [c.strip() for c in [line for line in table.splitlines()  # noqa: E731
                                             if line.startswith(prefix)][0].strip("|").split("|")]
  clip = row("| 0.5 | clip_compute |")
  assert clip[2] == "2" and clip[3].startswith("0.5700 [")
  assert clip[4].startswith("-8.00 [")     # (0.54 - 0.60, 0.60 - 0.70) -> mean -8 points
  assert clip[5].startswith("+3.00 [")     # (0.54 - 0.50, 0.60 - 0.58) -> mean +3 points
  assert clip[6].startswith("-0.150 [")    # losses (1.9, 1.8) against random's 2.0
  assert clip[7] == "5.0 / 1.0"
  random = row("| 0.5 | random |")
  assert random[5] == "" and random[6] == "" and random[4].startswith("-11.00 [")
  assert random[7] == ""                   # random units: no invariant counts to report
  half = row("| 0.5 | 0.5 |")             # the threshold scale 0.5 at keep 0.5
  assert half[3] == "2.0 / 4.0" and half[6].startswith("-0.50 [")  # (-2, +1) points vs scale 1
  assert row("| 1 | 0.5 |")[3] == "5.0 / 1.0"
  assert "Left out, not finished (1): keep0.7/random/seed0" in table
  grid = study_tables.grid_table(invariance_study.STUDY_TABLE, tmp_path, 0.5)
  assert grid == study_tables.criteria_table(tmp_path, invariance_study.CRITERIA)
  alone = tmp_path / "no_reference"
  _write_run(alone, "keep0.5", "random", 0, [1.0], [0.3])
  with pytest.raises(ValueError, match="no finished reference/fedavg"):
    study_tables.criteria_table(alone, ["random"])
  pytest.importorskip("matplotlib")
  sweep_file = types.SimpleNamespace(STUDY_TABLE=invariance_study.STUDY_TABLE)
  pngs = sweep_report.study_figures(sweep_file, tmp_path, tmp_path / "out")
  assert sorted(p.name for p in pngs) == ["criteria_accuracy.png", "threshold.png"]
  assert all(p.stat().st_size > 0 for p in pngs)
  assert sweep_report.study_figures(object(), tmp_path, tmp_path / "out") == []


def test_pairs_table_measures_each_method_against_each_of_its_references(tmp_path):
  from configs.studies import upload_planes, upload_planes_cifar10
  for seed, (fed, pad, split) in enumerate([(2.0, 1.8, 1.5), (4.0, 3.0, 2.0)]):
    _write_run(tmp_path, "compute_network", "fedavg", seed, [fed], [0.60 + seed / 10])
    _write_run(tmp_path, "compute_network", "clip_network", seed, [pad], [0.58 + seed / 10])
    _write_run(tmp_path, "compute_network", "clip_network+planes", seed, [split],
               [0.57 + seed / 10 + seed / 100])
  _write_run(tmp_path, "compute_network", "clip_network+planes", 2, [9.0], [0.1], finished=False)
  table = study_tables.grid_table(upload_planes.STUDY_TABLE, tmp_path, 0.5)
  row = lambda method, ref: [c.strip() for c in [  # noqa: E731
      line for line in table.splitlines() if line.startswith(f"| compute_network | {method} | "
                                                             f"{ref} |")][0].strip("|").split("|")]
  planes = row("clip_network+planes", "fedavg")
  assert planes[3] == "2" and planes[4] == "1.7500" and planes[5] == "3.0000"
  assert planes[6] == "+41.7%"                 # 1 - 1.75 / 3.0
  assert planes[7] == "+25.0, +50.0"           # 1 - 1.5/2, 1 - 2/4
  assert planes[8].startswith("-2.50 [")       # (-3, -2) points
  padded = row("clip_network+planes", "clip_network")
  assert padded[6] == "+27.1%" and padded[7] == "+16.7, +33.3"  # 1 - 1.75 / 2.4
  assert padded[8].startswith("-0.50 [")
  assert "clip_compute+planes" not in table    # its runs are absent: the pair is left out
  assert "Left out, not finished (1): compute_network/clip_network+planes/seed2" in table
  assert upload_planes_cifar10.STUDY_TABLE == upload_planes.STUDY_TABLE


def test_upload_planes_grid_is_the_paper_cell_with_the_bit_plane_arms():
  from configs.studies import upload_planes, upload_planes_cifar10
  runs = dict(upload_planes.get_sweep(seeds=[1]))
  assert sorted(runs) == sorted(f"compute_network/{m}/seed1" for m in upload_planes.METHODS)
  for name, c in runs.items():
    arm = name.split("/")[1]
    assert c.data.name == "femnist" and c.secagg.enabled and c.rounds == 30
    assert (c.devices.compute_slow, c.devices.network_slow, c.devices.both_slow) == (2, 1, 1)
    assert c.clip.upload == ("planes" if "+" in arm else "padded")
  assert runs["compute_network/clip_network+planes/seed1"].clip.high_bits == 12
  assert runs["compute_network/clip_network+planes8/seed1"].clip.high_bits == 8
  cifar = dict(upload_planes_cifar10.get_sweep(seeds=[0]))
  assert len(cifar) == 5 and all(c.data.name == "cifar10" for c in cifar.values())
