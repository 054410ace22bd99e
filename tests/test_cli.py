"""Every script: `--help` exits 0; a mistyped `--config.` key is one line naming the closest key."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py") if not p.name.startswith("_"))


def _script(*args):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script):
  proc = _script(f"scripts/{script}", "--help")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "flags" in (proc.stdout + proc.stderr).lower()


def test_a_mistyped_config_key_is_one_line_with_the_closest_key(tmp_path):
  proc = _script("scripts/train.py", "--config", "configs/quickstart.py",
                 f"--workdir={tmp_path / 'w'}", "--config.clip.grwoth=3")
  assert proc.returncode == 1
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert lines[0].startswith("error:") and "grwoth" in lines[0] and '"growth"' in lines[0]
  assert not (tmp_path / "w").exists()                 # nothing written before it stops


def test_compare_rejects_a_bad_method_before_training_anything(tmp_path):
  proc = _script("scripts/compare.py", "--config", "configs/femnist_clip.py:a",
                 f"--workdir={tmp_path / 'w'}", "--methods=fedavg,clip_computer")
  assert proc.returncode == 1
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: --methods has 'clip_computer'")
  assert not (tmp_path / "w").exists()


def test_a_workdir_inside_a_file_is_one_line(tmp_path):
  (tmp_path / "a_file").write_text("")
  proc = _script("scripts/train.py", "--config", "configs/quickstart.py",
                 f"--workdir={tmp_path / 'a_file' / 'run'}")
  assert proc.returncode == 1
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "is a file, not a folder" in lines[0], proc.stderr[-2000:]
