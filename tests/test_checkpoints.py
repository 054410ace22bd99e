"""Crash-safe checkpoints (DESIGN 4): written whole or not at all, the last two kept, an
unreadable newest one passed over in one line, Ctrl-C ends in one line and resumes exactly;
with several processes every one restores the checkpoint process 0 picked, or all refuse.
(Two real processes: `tests/test_multihost_resume.py`.)"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from clipjax import checkpoints, experiment
from tests.test_experiment import read_rows, tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _without_host_seconds(rows):  # wall-clock measurements: host_seconds*, secagg_seconds
  return [{k: v for k, v in r.items() if not k.startswith(("host_seconds", "secagg_seconds"))}
          for r in rows]


def test_an_unreadable_newest_checkpoint_is_passed_over_and_the_run_equals_an_uninterrupted_one(
    tmp_path, capsys):
  config = tiny_config("clip_compute", degree=3)
  config.rounds, config.eval_every, config.checkpoint_every = 4, 2, 1
  experiment.run(config, str(tmp_path / "whole"))
  assert experiment.run(config, str(tmp_path / "cut"), stop_after=3) is None
  folder = tmp_path / "cut" / "checkpoints"
  assert [r for r, _ in checkpoints.complete(folder)] == [3, 2]     # the newest two kept
  assert not list(folder.glob(".partial_*"))
  host = folder / "state_3" / "host.npz"
  host.write_bytes(host.read_bytes()[:100])                        # a crash mid-write
  capsys.readouterr()
  experiment.run(config, str(tmp_path / "cut"))
  said = [line for line in capsys.readouterr().out.splitlines() if "cannot be read" in line]
  assert len(said) == 1 and "state_3" in said[0] and "passing over it" in said[0]
  want, got = read_rows(tmp_path / "whole"), read_rows(tmp_path / "cut")
  assert [r["round"] for r in got] == [1, 2, 3, 4]
  assert _without_host_seconds(got) == _without_host_seconds(want)


def test_a_save_leaves_only_whole_checkpoints(tmp_path):
  config = tiny_config("fedavg", degree=3)
  config.rounds, config.eval_every, config.checkpoint_every = 3, 3, 1
  experiment.run(config, str(tmp_path))
  folder = tmp_path / "checkpoints"
  assert sorted(p.name for p in folder.iterdir()) == ["final", "state_2", "state_3"]
  # a save that a crash interrupted leaves a .partial_ folder, never a state_ one
  (folder / ".partial_4_123").mkdir()
  assert [r for r, _ in checkpoints.complete(folder)] == [3, 2]
  with np.load(folder / "state_3" / "host.npz") as host:
    assert int(host["rounds_done"]) == 3


def _train(workdir, rounds):
  cmd = [sys.executable, "scripts/train.py", "--config", "configs/quickstart.py",
         f"--workdir={workdir}", f"--config.rounds={rounds}", "--config.eval_every=0",
         "--config.num_clients=4", "--config.model.width=0.125", "--config.checkpoint_every=1",
         "--config.secagg.degree=3"]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_ctrl_c_ends_in_one_line_and_the_same_command_resumes_exactly(tmp_path):
  rounds = 6
  whole = _train(tmp_path / "whole", rounds)
  stopped = _train(tmp_path / "stopped", rounds)
  metrics = tmp_path / "stopped" / "metrics.jsonl"
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and stopped.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
      break
    time.sleep(0.2)
  assert stopped.poll() is None, stopped.communicate()
  stopped.send_signal(signal.SIGINT)
  _, err = stopped.communicate(timeout=300)
  assert stopped.returncode == 130, err[-2000:]
  assert "Traceback" not in err
  last = [line for line in err.splitlines() if line.strip()][-1]
  assert last.startswith("stopped after round ") and last.endswith("the same command resumes.")
  written = len(read_rows(tmp_path / "stopped"))
  assert last.startswith(f"stopped after round {written} of {rounds};")
  again = _train(tmp_path / "stopped", rounds)
  assert again.wait(timeout=600) == 0, again.communicate()[1][-2000:]
  assert whole.wait(timeout=600) == 0, whole.communicate()[1][-2000:]
  want = read_rows(tmp_path / "whole")
  got = read_rows(tmp_path / "stopped")
  assert [r["round"] for r in got] == list(range(1, rounds + 1))
  assert _without_host_seconds(got) == _without_host_seconds(want)


class _Peers:
  """Process `index` of two, without a distributed runtime: process 0 picked `picked`; the
  other process reports `peer_error` after its restore."""

  def __init__(self, index, picked=0, peer_error=None):
    self.index, self.count, self._picked, self._peer_error = index, 2, picked, peer_error

  @property
  def is_lead(self):
    return self.index == 0

  def broadcast(self, obj):
    return obj if self.is_lead else self._picked

  def allgather(self, obj):
    return [obj, self._peer_error] if self.is_lead else [self._peer_error, obj]


def _toy_state(rounds):
  from tests.toy import make_setting, run_rounds
  algo, params, _, _ = make_setting("clip_compute", [5, 3, 6, 4], secure=True)
  return algo, run_rounds(algo, params, rounds)[0], params


def test_every_process_restores_the_checkpoint_process_0_picked_or_all_refuse_in_one_line(
    tmp_path):
  algo, state, params = _toy_state(3)
  folder = tmp_path / "checkpoints"
  checkpoints.save(folder, state, 3)
  fresh = algo.init(params)
  lead, done = checkpoints.restore_agreed(folder, fresh, 3, _Peers(0))
  other, also = checkpoints.restore_agreed(folder, fresh, 0, _Peers(1, picked=3))
  assert done == also == 3
  for got in (lead, other):  # the saved state, on the devices of the fresh one
    for a, b in zip(jax.tree.leaves(checkpoints._device_tree(got)),
                    jax.tree.leaves(checkpoints._device_tree(state))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      assert isinstance(a, jax.Array)
    assert got.virtual_time == state.virtual_time
    np.testing.assert_array_equal(got.reports.fit_full, state.reports.fit_full)
  # Nothing checkpointed: every process starts from the fresh state.
  assert checkpoints.restore_agreed(tmp_path / "none", fresh, 0, _Peers(1, picked=0)) == (fresh, 0)
  # A process that cannot see the checkpoint (another filesystem) refuses; so does process 0.
  with pytest.raises(ValueError) as refused:
    checkpoints.restore_agreed(tmp_path / "elsewhere", fresh, 0, _Peers(1, picked=3))
  said = str(refused.value)
  assert "\n" not in said and said.startswith("process 1 cannot read the checkpoint ")
  assert "state_3 that process 0 resumes from (" in said and "(a shared filesystem)" in said
  with pytest.raises(ValueError, match="^peer said no$"):
    checkpoints.restore_agreed(folder, fresh, 3, _Peers(0, peer_error="peer said no"))
