"""A run stopped after round 2 of 4 and started again writes an uninterrupted run's metrics."""

import json

import pytest

from clipjax import experiment
from tests.test_experiment import read_rows, tiny_config


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
