"""A run over two processes, stopped by Ctrl-C in one of them and later killed outright, resumes
from process 0's checkpoints and writes the metrics an uninterrupted two-process run writes.

The processes run `scripts/train.py` in fresh interpreters, as `tests/round/test_scale.py`
starts them: JAX fixes its distributed runtime when it starts.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from clipjax import checkpoints

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROUNDS = 8


def _port() -> int:
  with socket.socket() as sock:  # a free port for the coordinator: let the OS choose
    sock.bind(("localhost", 0))
    return sock.getsockname()[1]


def _start(workdir: pathlib.Path, logs: pathlib.Path, name: str) -> list[subprocess.Popen]:
  """Both processes of one run, their output in `logs/<name>_<i>.log`."""
  port = _port()
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  procs = []
  for i in range(2):
    cmd = [sys.executable, "scripts/train.py", "--config", "configs/quickstart.py",
           f"--workdir={workdir}", f"--config.rounds={ROUNDS}", "--config.eval_every=3",
           "--config.num_clients=8", "--config.cohort_size=6", "--config.model.width=0.125",
           "--config.scale.chunk_clients=2", "--config.checkpoint_every=1",
           f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"]
    with open(logs / f"{name}_{i}.log", "w") as log:
      procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, text=True))
  return procs


def _log(logs: pathlib.Path, name: str, i: int) -> str:
  return (logs / f"{name}_{i}.log").read_text()


def _wait(procs, logs, name, timeout=900) -> list[int]:
  codes = []
  for i, p in enumerate(procs):
    try:
      codes.append(p.wait(timeout=timeout))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail(f"{name} process {i} did not end:\n{_log(logs, name, i)[-3000:]}")
  return codes


def _until(condition, procs, logs, name, timeout=900):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if condition():
      return
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.05)
  for p in procs:
    p.kill()
  pytest.fail(f"{name}: the condition was not met while both processes ran:\n"
              + "\n".join(_log(logs, name, i)[-2000:] for i in range(2)))


def _rows(path: pathlib.Path) -> list[dict]:
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _without_host_seconds(rows):  # wall-clock measurements: host_seconds*, secagg_seconds
  return [{k: v for k, v in r.items() if not k.startswith(("host_seconds", "secagg_seconds"))}
          for r in rows]


@pytest.mark.slow
def test_two_processes_stopped_and_killed_resume_to_the_uninterrupted_metrics(tmp_path):
  logs = tmp_path / "logs"
  logs.mkdir()
  whole, cut = tmp_path / "whole", tmp_path / "cut"
  folder = cut / "checkpoints"
  uninterrupted = _start(whole, logs, "whole")

  # Ctrl-C reaches process 1 alone: both stop after the same round, process 0 checkpoints it.
  first = _start(cut, logs, "first")
  _until(lambda: len(_rows(cut / "metrics.jsonl")) >= 1, first, logs, "first")
  first[1].send_signal(signal.SIGINT)
  assert _wait(first, logs, "first") == [130, 130], [_log(logs, "first", i)[-3000:]
                                                      for i in range(2)]
  stopped = len(_rows(cut / "metrics.jsonl"))
  assert 1 <= stopped < ROUNDS
  for i in range(2):
    said = _log(logs, "first", i)
    assert "Traceback" not in said
    last = [line for line in said.splitlines() if line.strip()][-1]
    assert last == f"stopped after round {stopped} of {ROUNDS}; the same command resumes."
  assert len(_rows(cut / "process_1" / "metrics.jsonl")) == stopped
  assert checkpoints.complete(folder)[0][0] == stopped

  # Both killed once process 0 has completed a later checkpoint (a crash, no goodbye).
  second = _start(cut, logs, "second")
  _until(lambda: (checkpoints.complete(folder) or [(0, None)])[0][0] >= stopped + 2, second,
         logs, "second")
  for p in second:
    p.send_signal(signal.SIGKILL)
  _wait(second, logs, "second")
  assert not (cut / "summary.json").exists(), "the run ended before it was killed"
  newest = checkpoints.complete(folder)[0][0]
  assert stopped + 2 <= newest < ROUNDS
  before = _rows(cut / "metrics.jsonl")[:newest]

  # Started again, both processes go on from process 0's newest checkpoint.
  third = _start(cut, logs, "third")
  assert _wait(third, logs, "third") == [0, 0], [_log(logs, "third", i)[-3000:] for i in range(2)]
  assert _wait(uninterrupted, logs, "whole") == [0, 0], [_log(logs, "whole", i)[-3000:]
                                                         for i in range(2)]
  want, got = _rows(whole / "metrics.jsonl"), _rows(cut / "metrics.jsonl")
  assert [r["round"] for r in got] == list(range(1, ROUNDS + 1))
  assert got[:newest] == before  # not run again: even their host seconds are the same
  assert _without_host_seconds(got) == _without_host_seconds(want)
  other = _rows(cut / "process_1" / "metrics.jsonl")
  assert _without_host_seconds(other) == _without_host_seconds(_rows(whole / "process_1" /
                                                                     "metrics.jsonl"))
  assert _without_host_seconds(other) == _without_host_seconds(got)
  assert any(r["stragglers"] for r in got[newest:])  # CLIP's state (thresholds, times) restored
  summaries = [json.loads((d / "summary.json").read_text()) for d in (whole, cut)]
  assert summaries[0]["final_test_accuracy"] == summaries[1]["final_test_accuracy"]
  assert (folder / "final").exists() and not (cut / "process_1" / "checkpoints").exists()
