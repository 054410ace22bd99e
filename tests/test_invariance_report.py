"""scripts/invariance_report.py's criterion-agreement table (issue 25) and its input errors."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]



def test_agreement_table_gives_the_mean_and_the_positive_share_per_band_of_rounds(script):
  report = script("invariance_report")
  records = []
  for rnd, rho in ((2, -1.0), (2, 1.0), (3, 0.5), (3, 0.5), (4, 0.2), (4, -0.4)):
    records.append({"round": rnd, "criterion": "magnitude", "spearman": {"l": rho, "m": 0.0}})
  table = report.agreement_table(records, ["l", "m"], bands=2)
  lines = table.splitlines()
  assert lines[0].split("|")[1:-1] == [" criterion ", " rounds ", " rho l ", " rho m "]
  # rounds 2-3: mean of -1, 1, .5, .5 = +0.25, 3 of 4 positive; round 4: -0.1, 1 of 2
  assert "| magnitude | 2-3 | +0.25 (75%) | +0.00 (0%) |" in table
  assert "| magnitude | 4-4 | -0.10 (50%) | +0.00 (0%) |" in table


@pytest.mark.parametrize("args,message", [
    (["--criteria=mnist"], "unknown dataset 'mnist'"),
    (["--criteria=femnist", "--rounds=2"], "--rounds=2"),
])
def test_bad_agreement_arguments_get_one_clear_line(args, message):
  out = subprocess.run([sys.executable, "scripts/invariance_report.py", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert message in out.stderr and "Traceback" not in out.stderr


def test_saved_records_are_tabulated_and_plotted_without_a_run(tmp_path):
  import json
  records = tmp_path / "agreement.jsonl"
  rows = [{"dataset": "femnist", "round": rnd, "client": c, "criterion": crit,
           "spearman": {"conv0": rho, "dense0": -rho}}
          for rnd in (2, 3) for c in (0, 1) for crit, rho in (("invariance", 0.5), ("random", 0.0))]
  records.write_text("".join(json.dumps(r) + "\n" for r in rows))
  plot = "--plot=" + str(tmp_path / "plots") if importlib.util.find_spec("matplotlib") else ""
  out = subprocess.run([sys.executable, "scripts/invariance_report.py", f"--records={records}",
                        *filter(None, [plot])], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr
  assert "mean over 2 clients" in out.stdout
  assert "| invariance | 2-2 | +0.50 (100%) | -0.50 (0%) |" in out.stdout
  if plot:
    assert (tmp_path / "plots" / "agreement_femnist.png").stat().st_size > 0
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  out = subprocess.run([sys.executable, "scripts/invariance_report.py", f"--records={empty}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0 and "holds no records" in out.stderr
