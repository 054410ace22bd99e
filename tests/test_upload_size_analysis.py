"""scripts/upload_size_analysis.py (issue 26's what-if): round times by hand, and bad input."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]



def _row(fit, upload, server=0.1):
  n = len(fit)
  return {"download_s": [0.1] * n, "fit_s": fit, "mask_s": [0.0] * n, "upload_s": upload,
          "latency_s": [0.2] * n, "survivors": [True] * n, "server_seconds": server}


def test_only_the_flagged_straggler_sends_fewer_bits_and_prunes(script):
  report = script("upload_size_analysis")
  # five clients; client 4 is slow on the link: totals 1.3, 1.3, 1.3, 1.3, 2.9
  row = _row(fit=[0.5] * 5, upload=[0.5, 0.5, 0.5, 0.5, 2.1])
  padded = report.what_if([row], 32.0, 0.5, 0.2)
  # the straggler: 0.1 + 0.25 + 2.1 + 0.2 = 2.65, plus the server's 0.1
  assert padded["round_s"] == pytest.approx(2.75) and padded["flagged"] == 1
  half = report.what_if([row], 16.0, 0.5, 0.2)
  assert half["round_s"] == pytest.approx(0.1 + 0.25 + 1.05 + 0.2 + 0.1)
  # the others' bigger upload (both planes) sets the pace once the straggler's is small
  both = report.what_if([row], 8.0, 0.5, 0.2, fast_bits=64.0)
  assert both["round_s"] == pytest.approx(max(0.1 + 0.5 + 1.0 + 0.2,
                                              0.1 + 0.25 + 0.525 + 0.2) + 0.1)
  # a straggler that dropped out neither holds the round up nor counts in the quantile
  dropped = report.what_if([dict(row, survivors=[True, True, True, True, False])], 8.0, 0.5, 0.2)
  assert dropped["round_s"] == pytest.approx(1.3 + 0.1) and dropped["flagged"] == 0


def test_a_run_that_is_not_secure_fedavg_is_refused_in_one_line(tmp_path):
  (tmp_path / "summary.json").write_text(json.dumps({"method": "clip_compute",
                                                     "secagg": "secagg+"}))
  (tmp_path / "metrics.jsonl").write_text(json.dumps(_row([0.5], [0.5])) + "\n")
  out = subprocess.run([sys.executable, "scripts/upload_size_analysis.py", f"--run={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "not a finished fedavg run under SecAgg" in out.stderr
  assert "Traceback" not in out.stderr
