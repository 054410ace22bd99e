"""scripts/reproduce.py end to end on a tiny FEMNIST sweep: tables written, finished runs skipped."""

import pathlib
import subprocess
import sys

import pytest

from clipjax.data import download

REPO = pathlib.Path(__file__).resolve().parents[1]
# 2 methods x 1 seed x 1 scenario, 3 writers (one straggler), 2 rounds, LEAF CNN at x0.125.
TINY = ["--config", "configs/paper/femnist_cnn.py", "--seeds", "0", "--methods",
        "fedavg,clip_compute", "--only_scenario", "compute", "--override", "num_clients=3",
        "--override", "rounds=2", "--override", "model.width=0.125"]


def _reproduce(root, *args):
  return subprocess.run([sys.executable, "scripts/reproduce.py", "--root", str(root), *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tiny_sweep_writes_tables_and_skips_finished_runs(tmp_path):
  if download.present("femnist") is None:
    pytest.skip("real FEMNIST data not found (python scripts/download_data.py femnist)")
  first = _reproduce(tmp_path, *TINY)
  assert first.returncode == 0, first.stderr[-3000:]
  sweep = tmp_path / "femnist_cnn_cpu"
  table = (sweep / "tables.md").read_text()
  assert "## compute" in table and "| fedavg | on |" in table and "| clip_compute | on |" in table
  assert "[1/2] compute/fedavg/seed0: new" in first.stdout
  assert (sweep / "sweep.json").exists()

  second = _reproduce(tmp_path, *TINY)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "[2/2] compute/clip_compute/seed0: finished" in second.stdout
  assert "ran 0, skipped 2" in second.stdout
  # Runs of other overrides in the folder: refused before anything is written or trained.
  before = (sweep / "sweep.json").read_text()
  other = _reproduce(tmp_path, *[a if a != "rounds=2" else "rounds=3" for a in TINY])
  assert other.returncode == 1
  assert other.stderr.strip().splitlines()[-1].startswith("error: ") and "another config" in (
      other.stderr)
  assert (sweep / "sweep.json").read_text() == before


def test_bad_input_ends_with_one_clear_line(tmp_path):
  bad = _reproduce(tmp_path, *TINY, "--only_scenario", "typhoon", "--dry_run")
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown scenario 'typhoon'")
  missing = _reproduce(tmp_path, "--config", "configs/paper/nope.py")
  assert missing.returncode == 1 and "sweep file configs/paper/nope.py not found" in missing.stderr


def test_overrides_are_checked_and_derive_the_stragglers():
  from configs.paper import femnist_cnn, sweep
  with pytest.raises(ValueError, match="no key 'depth'"):
    femnist_cnn.get_sweep(overrides={"model.depth": 3})
  with pytest.raises(ValueError, match="sweep axis"):
    femnist_cnn.get_sweep(overrides={"seed": 3})
  assert sweep.parse_overrides(["rounds=2", "model.width=0.125", "data.name=femnist"]) == {
      "rounds": 2, "model.width": 0.125, "data.name": "femnist"}
  runs = dict(femnist_cnn.get_sweep(seeds=[0], methods=["fedavg", "fluid"],
                                    overrides={"num_clients": 10}))
  assert list(runs) == [f"{s}/{m}/seed0" for s in sweep.SCENARIOS
                        for m in ("fedavg", "fedavg_plain", "fluid")]
  assert not runs["compute/fedavg_plain/seed0"].secagg.enabled
  assert runs["compute/fedavg_plain/seed0"].method == "fedavg"
  assert runs["compute/fedavg/seed0"].secagg.enabled
  network = runs["compute_network/fluid/seed0"].devices
  assert (network.compute_slow, network.network_slow, network.both_slow) == (1, 0, 1)
  assert sweep.straggler_counts("compute_network", 20) == {
      "compute_slow": 2, "network_slow": 1, "both_slow": 1}


def test_a_run_stored_before_a_key_was_added_is_the_same_run():
  import json
  from clipjax import config_types
  from configs import base
  config = base.get_config()
  stored = json.loads(config.to_json_best_effort(indent=2, sort_keys=True))
  del stored["data"]["max_examples"]  # as written before data.max_examples existed
  old = json.dumps(stored, indent=2, sort_keys=True)
  assert config_types.same_run_config(old, config)
  config.data.max_examples = 6000  # a value other than the one the old run had
  assert not config_types.same_run_config(old, config)
  config.data.max_examples = 0
  config.rounds += 1  # any other difference still counts
  assert not config_types.same_run_config(old, config)
  config.rounds -= 1
  for key in ("straggler_info", "histogram_bins", "histogram_lo_s", "histogram_hi_s"):
    del stored["clip"][key]  # as written before the time histograms existed (issue 27)
  old = json.dumps(stored, indent=2, sort_keys=True)
  config.method = stored["method"] = "clip_compute"  # a method that reads these keys
  old = json.dumps(stored, indent=2, sort_keys=True)
  assert config.clip.straggler_info == "auto"
  assert not config_types.same_run_config(old, config)  # auto is not what those runs did
  config.clip.straggler_info = "neighbours"
  assert config_types.same_run_config(old, config)
  config.clip.straggler_info = "histogram"
  assert not config_types.same_run_config(old, config)


def test_keys_a_method_never_reads_do_not_make_another_run_of_it():
  import json
  from clipjax import config_types
  from configs import base
  config = base.get_config()
  for method, same in (("fedavg", True), ("clip_compute", False), ("random", False)):
    config.method, config.clip.straggler_info = method, "neighbours"
    old = config.to_json_best_effort(indent=2, sort_keys=True)
    config.clip.straggler_info, config.clip.histogram_bins = "histogram", 64
    assert config_types.same_run_config(old, config) is same, method
    config.clip.histogram_bins = 256
  for method, same in (("fedavg", True), ("random", True), ("fluid", True),
                       ("clip_network", False)):
    config.method, config.clip.score, config.clip.threshold_init = method, "max_relative", "min"
    old = config.to_json_best_effort(indent=2, sort_keys=True)
    config.clip.score, config.clip.threshold_init = "relative_l2", "band"
    assert config_types.same_run_config(old, config) is same, method
  # the graph's randomness: read by runs that agree keys (SecAgg, or a broadcasting method)
  config.clip.score, config.clip.threshold_init = "relative_l2", "band"
  for method, secure, same in (("fedavg", False, True), ("fluid", False, True),
                               ("fedavg", True, False), ("clip_compute", False, False)):
    config.method, config.secagg.enabled = method, secure
    config.secagg.graph_randomness = "seed"
    old = config.to_json_best_effort(indent=2, sort_keys=True)
    config.secagg.graph_randomness = "committed"
    assert config_types.same_run_config(old, config) is same, (method, secure)
  stored = json.loads(old)
  del stored["secagg"]["graph_randomness"]  # a secure clip run stored before the key existed
  assert not config_types.same_run_config(json.dumps(stored), config)
  config.secagg.graph_randomness = "seed"  # what those runs did
  assert config_types.same_run_config(json.dumps(stored), config)
  config.method, config.secagg.enabled = "fedavg", False
  old = config.to_json_best_effort(indent=2, sort_keys=True)
  config.clip.min_keep = 0.3  # keys outside those lists still count
  assert not config_types.same_run_config(old, config)
