"""A run stopped after round 2 of 4 and started again writes an uninterrupted run's metrics; a
run given another total of rounds writes the metrics of a run of that total from the start, or
is refused in one line when its method depends on the total or it has run more rounds."""

import json
import pathlib
import subprocess
import sys

import pytest

from clipjax import config_types, experiment
from tests.test_experiment import read_rows, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _without_host_seconds(rows):  # wall-clock measurements: host_seconds*, secagg_seconds
  return [{k: v for k, v in r.items() if not k.startswith(("host_seconds", "secagg_seconds"))}
          for r in rows]


def test_resumed_run_equals_uninterrupted_run(tmp_path):
  config = tiny_config("clip_compute", degree=3)
  config.rounds, config.eval_every, config.checkpoint_every = 4, 2, 0
  whole = experiment.run(config, str(tmp_path / "whole"))
  assert experiment.run(config, str(tmp_path / "resumed"), stop_after=2) is None
  assert len(read_rows(tmp_path / "resumed")) == 2
  # A row written after the newest checkpoint (a crash mid-way) is written again.
  with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:
    f.write(json.dumps({"round": 3, "partial": True}) + "\n")
  resumed = experiment.run(config, str(tmp_path / "resumed"))
  want, got = read_rows(tmp_path / "whole"), read_rows(tmp_path / "resumed")
  assert [r["round"] for r in got] == [1, 2, 3, 4]
  assert _without_host_seconds(got) == _without_host_seconds(want)
  assert resumed["final_test_accuracy"] == whole["final_test_accuracy"]
  assert any(r["stragglers"] for r in got[2:])  # CLIP's state (thresholds, times) was restored
  # Finished: the same command returns the summary without running again.
  again = experiment.run(config, str(tmp_path / "resumed"))
  assert again["final_test_accuracy"] == whole["final_test_accuracy"]
  assert len(read_rows(tmp_path / "resumed")) == 4
  # Another config in a workdir that holds a run is refused before anything is overwritten.
  config.seed = 7
  with pytest.raises(ValueError, match="holds a run of another config"):
    experiment.run(config, str(tmp_path / "whole"))
  assert read_rows(tmp_path / "whole") == want


def _without_host(summary):
  return {k: v for k, v in summary.items() if k != "host_seconds"}


def test_a_run_extended_or_shortened_equals_a_run_of_the_new_total_from_the_start(tmp_path, capsys):
  config = tiny_config("clip_compute", degree=3)
  config.eval_every, config.checkpoint_every = 2, 0
  config.rounds = 5
  whole = experiment.run(config, str(tmp_path / "whole"))  # evaluates rounds 2, 4 and 5
  config.rounds = 3
  three = experiment.run(config, str(tmp_path / "grown"))  # evaluates rounds 2 and 3, its last
  three_rows = read_rows(tmp_path / "grown")
  assert "test_accuracy" in three_rows[2] and "test_accuracy" not in read_rows(tmp_path / "whole")[2]

  # Stopped after 3 of 5 rounds and asked for 3: the 3-round run, its last round evaluated.
  config.rounds = 5
  experiment.run(config, str(tmp_path / "shortened"), stop_after=3)
  assert "test_accuracy" not in read_rows(tmp_path / "shortened")[2]
  config.rounds = 3
  capsys.readouterr()
  shortened = experiment.run(config, str(tmp_path / "shortened"))
  assert "rounds changed from 5 to 3" in capsys.readouterr().out
  assert _without_host_seconds(read_rows(tmp_path / "shortened")) == _without_host_seconds(three_rows)
  assert _without_host(shortened) == _without_host(three)

  # The finished 3-round run extended to 5: rounds 4 and 5 run from its checkpoint, and the
  # evaluation of round 3 (its last, off the eval_every=2 grid of 5 rounds) leaves its row.
  config.rounds = 5
  capsys.readouterr()
  grown = experiment.run(config, str(tmp_path / "grown"))
  said = capsys.readouterr().out
  assert ("rounds changed from 3 to 5; the run goes on from its checkpoint after round 3."
          in said)
  got, want = read_rows(tmp_path / "grown"), read_rows(tmp_path / "whole")
  assert [r["round"] for r in got] == [1, 2, 3, 4, 5]
  assert _without_host_seconds(got) == _without_host_seconds(want)
  assert [r["host_seconds"] for r in got[:3]] == [r["host_seconds"] for r in three_rows]  # kept
  assert _without_host(grown) == _without_host(whole) and grown["rounds"] == 5
  stored = json.loads((tmp_path / "grown" / "summary.json").read_text())
  assert stored["rounds"] == 5 and stored["final_test_accuracy"] == whole["final_test_accuracy"]
  assert (tmp_path / "grown" / "checkpoints" / "final").exists()
  assert json.loads((tmp_path / "grown" / "config.json").read_text())["rounds"] == 5
  # Now a 5-round run: 3 rounds are fewer than it has run.
  config.rounds = 3
  with pytest.raises(ValueError, match=r"holds 5 rounds already run \(of 5\)"):
    experiment.run(config, str(tmp_path / "grown"))


def _stored_run(folder, config, rows):
  folder.mkdir()
  (folder / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  (folder / "metrics.jsonl").write_text("".join(json.dumps({"round": r + 1}) + "\n"
                                                for r in range(rows)))
  return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_total_the_method_depends_on_or_below_the_rounds_run_is_refused_in_one_line(tmp_path):
  config = tiny_config("fluid")
  config.rounds = 4
  before = _stored_run(tmp_path / "fluid", config, rows=2)
  config.rounds = 6
  with pytest.raises(ValueError) as refused:
    experiment.run(config, str(tmp_path / "fluid"))
  said = str(refused.value)
  assert "\n" not in said and "4-round run" in said and "'fluid'" in said
  assert "FLuID's threshold schedule to the total rounds" in said
  assert "choose a new --workdir for a 6-round run" in said
  assert {p.name: p.read_bytes() for p in (tmp_path / "fluid").iterdir()} == before

  config = tiny_config("clip_compute", degree=3)
  config.rounds = 6
  before = _stored_run(tmp_path / "clip", config, rows=4)
  config.rounds = 3
  with pytest.raises(ValueError) as refused:
    experiment.run(config, str(tmp_path / "clip"))
  said = str(refused.value)
  assert "\n" not in said and "holds 4 rounds already run (of 6)" in said
  assert "--config.rounds=3 is fewer: ask for at least 4 rounds, or choose a new --workdir." in said
  assert {p.name: p.read_bytes() for p in (tmp_path / "clip").iterdir()} == before
  config.rounds, config.seed = 8, 7  # rounds and something else: another run
  with pytest.raises(ValueError, match="holds a run of another config"):
    experiment.run(config, str(tmp_path / "clip"))


def test_other_rounds_names_the_stored_total_only_when_rounds_alone_differ():
  config = tiny_config("clip_compute")
  config.rounds = 5
  stored = config.to_json_best_effort(indent=2, sort_keys=True)
  assert config_types.other_rounds(stored, config) is None      # the same run
  config.rounds = 9
  assert config_types.other_rounds(stored, config) == 5
  assert not config_types.same_run_config(stored, config)
  config.scale.chunk_clients = 3                                  # layout only: still rounds alone
  assert config_types.other_rounds(stored, config) == 5
  config.seed = 1
  assert config_types.other_rounds(stored, config) is None      # another run
  assert config_types.other_rounds("not json", config) is None


def test_the_cli_refuses_another_total_in_one_line(tmp_path):
  from configs import quickstart
  config = quickstart.get_config()
  config.method, config.secagg.enabled, config.rounds = "fluid", False, 4
  _stored_run(tmp_path / "fluid", config, rows=4)
  config.method, config.secagg.enabled = "clip_compute", True
  _stored_run(tmp_path / "clip", config, rows=4)
  for name, extra, says in [
      ("fluid", ["--config.method=fluid", "--config.secagg.enabled=False", "--config.rounds=6"],
       "holds a 4-round run and method 'fluid' scales FLuID's threshold schedule"),
      ("clip", ["--config.rounds=2"], "holds 4 rounds already run (of 4); --config.rounds=2")]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "--config",
         str(ROOT / "configs" / "quickstart.py"), "--workdir", str(tmp_path / name), *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: workdir ") and says in lines[0], lines


def test_a_second_process_on_a_running_workdir_is_refused_and_a_dead_ones_lock_taken_over(
    tmp_path):
  # Two sweeps over one root once ran the same run at once and interleaved their rows in one
  # metrics.jsonl. The workdir's lock (host and pid) now stops the second before it writes.
  config = tiny_config("clip_compute", degree=3)
  config.rounds, config.checkpoint_every = 2, 0
  workdir = tmp_path / "run"
  assert experiment.run(config, str(workdir), stop_after=1) is None
  assert not (workdir / experiment.LOCK_FILE).exists()  # released when the process stops
  written = (workdir / "metrics.jsonl").read_text()
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    import socket
    (workdir / experiment.LOCK_FILE).write_text(f"{socket.gethostname()} {holder.pid}\n")
    with pytest.raises(ValueError, match=f"in use by process {holder.pid} on .*delete"):
      experiment.run(config, str(workdir))
    assert (workdir / "metrics.jsonl").read_text() == written
    # A lock held on another host cannot be checked from here: refused, with the way out.
    (workdir / experiment.LOCK_FILE).write_text("other-host 1\n")
    with pytest.raises(ValueError, match="in use by process 1 on other-host"):
      experiment.run(config, str(workdir))
    (workdir / experiment.LOCK_FILE).write_text(f"{socket.gethostname()} {holder.pid}\n")
  finally:
    holder.kill()
    holder.wait()
  summary = experiment.run(config, str(workdir))  # the dead process's lock is taken over
  assert summary is not None and [r["round"] for r in read_rows(workdir)] == [1, 2]
  assert not (workdir / experiment.LOCK_FILE).exists()
