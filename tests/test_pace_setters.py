"""scripts/pace_setters.py (issue 26): who paced each round, by device kind, and bad input."""

import json
import pathlib
import subprocess
import sys

import numpy as np

from configs import base

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _row(times, upload, survivors=None, **extra):
  n = len(times)
  return {"client_time_s": times, "upload_s": upload,
          "survivors": survivors or [True] * n, **extra}


def test_the_slowest_survivor_paces_the_round_by_its_device(script):
  report = script("pace_setters")
  kinds = np.array(["fast", "cpu", "link", "both"])
  history = [
      _row([1.0, 2.0, 3.0, 1.0], [0.1, 0.1, 1.5, 0.1]),                     # the slow link
      _row([1.0, 2.0, 3.0, 1.0], [0.1, 0.5, 1.5, 0.1], [True, True, False, True]),  # it dropped
      _row([1.0, 2.0, 9.0], [0.1, 0.2, 0.3], cohort=[3, 1, 0]),               # a cohort: id 0
      {"aborted": "x", "survivors": [False] * 4, "client_time_s": [1.0] * 4, "upload_s": [0] * 4},
      {"round": 9, "skipped": "too few"},
  ]
  got = report.pace(history, kinds)
  assert got["counts"] == {"link": 1, "both": 0, "cpu": 1, "fast": 1}
  np.testing.assert_allclose(got["upload_share"], [0.5, 0.25, 0.3 / 9.0])


def test_device_kinds_follow_the_configured_counts(script):
  report = script("pace_setters")
  c = base.get_config()
  c.num_clients = 20
  c.devices.compute_slow, c.devices.network_slow, c.devices.both_slow = 2, 1, 1
  kinds = report.device_kinds(json.loads(c.to_json_best_effort()))
  assert list(np.sort(kinds)) == sorted(["cpu"] * 2 + ["link", "both"] + ["fast"] * 16)


def test_an_empty_sweep_is_refused_in_one_line(tmp_path):
  out = subprocess.run([sys.executable, "scripts/pace_setters.py", f"--sweep={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "no run folders" in out.stderr
  assert "Traceback" not in out.stderr
