"""The notebook runs as on Colab: in a fresh virtualenv, outside any checkout (nbclient).

Nothing is installed in the kernel's virtualenv but ipykernel, so the notebook has to clone the
repository (a snapshot of this working tree, uncommitted work included, as a local git
repository), `pip install -e <clone>[plots]` (from the package registry, through pip's normal
cache), download the Shakespeare text (served from 127.0.0.1 as `$CLIPJAX_DATA_MIRROR`: no test
reaches the internet but pip), run the main job at a reduced size and show the table and the plot.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed "
                               "(pip install -e '.[test]' installs nbclient, nbformat, ipykernel)")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed "
                               "(pip install -e '.[test]')")

from clipjax.data import paths  # noqa: E402
from tests.data import loopback  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "clip_quickstart.ipynb"
SHAKESPEARE = "shakespeare/shakespeare.txt.gz"
KERNEL = "clipjax-fresh-venv"
# The smallest run that still has both methods train slow clients under SecAgg+ (2 rounds of
# 4 roles, 2 of them slow, as configs/main_job.py's devices.compute_slow says).
REDUCED = {"ROUNDS": 2, "NUM_CLIENTS": 4, "OVERRIDES": {"data.max_examples": 200}}


def _with_parameters(notebook, **values):
  """Adds a cell after the one tagged `parameters` that sets `values` (papermill's way)."""
  (index,) = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
  source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
  return notebook


def _publish(folder: pathlib.Path) -> str:
  """A git repository holding this working tree as it is (tracked and untracked files that git
  does not ignore), as the published repository the notebook clones; its file:// URL."""
  listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          cwd=ROOT, capture_output=True, check=True).stdout.decode()
  for name in filter(None, listed.split("\0")):
    if (ROOT / name).is_file():  # a tracked file deleted in the working tree is left out
      (folder / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(ROOT / name, folder / name)
  git = ["git", "-c", "user.name=clipjax tests", "-c", "user.email=tests@localhost",
         "-c", "commit.gpgsign=false"]
  subprocess.run(git + ["init", "-q"], cwd=folder, check=True)
  subprocess.run(git + ["add", "-A"], cwd=folder, check=True)
  subprocess.run(git + ["commit", "-q", "-m", "snapshot of the working tree"], cwd=folder,
                 check=True)
  return folder.as_uri()


def _clean_env(venv: pathlib.Path, **extra: str) -> dict[str, str]:
  """This process's environment as a fresh machine's: none of the test session's Python, JAX or
  clipjax settings, the virtualenv's bin/ first on PATH; then `extra`."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("CLIPJAX_", "JAX_", "XLA_", "PYTHON", "PYTEST_", "VIRTUAL_ENV",
                              "JUPYTER", "JPY_", "MPLBACKEND"))}
  ours = pathlib.Path(sys.prefix) / "bin"
  path = [p for p in env.get("PATH", "").split(os.pathsep) if p and pathlib.Path(p) != ours]
  env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
  for name in ("NO_PROXY", "no_proxy"):  # the mirror is on this machine
    env[name] = ",".join(filter(None, [env.get(name), "127.0.0.1", "localhost"]))
  env.update(extra)
  return env


def _fresh_venv(folder: pathlib.Path) -> pathlib.Path:
  """A virtualenv holding only ipykernel (what a Colab-like kernel has); its python."""
  subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
  python = folder / "bin" / "python"
  subprocess.run([str(python), "-m", "pip", "install", "-q", "ipykernel"], check=True,
                 env=_clean_env(folder))
  return python


def _kernelspec(jupyter_path: pathlib.Path, python: pathlib.Path) -> None:
  """A kernel named KERNEL that runs `python` (found through $JUPYTER_PATH)."""
  folder = jupyter_path / "kernels" / KERNEL
  folder.mkdir(parents=True)
  (folder / "kernel.json").write_text(json.dumps({
      "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "clipjax fresh venv", "language": "python"}))


def _outputs(notebook) -> list[dict]:
  return [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_placeholder_url_outside_a_checkout_is_one_line(tmp_path):
  """Not in a checkout and REPO_URL still the placeholder: the notebook stops naming REPO_URL."""
  pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[test]')")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3")
  with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
    client.execute(cwd=str(tmp_path))
  assert "set REPO_URL in the parameters cell" in str(error.value)
  assert not (tmp_path / "clipjax-repo").exists()


@pytest.mark.slow
def test_notebook_installs_downloads_and_runs_in_a_fresh_venv(tmp_path, monkeypatch):
  try:
    data_file = paths.find_data_file(SHAKESPEARE, "shakespeare")
  except (FileNotFoundError, ValueError) as e:
    pytest.skip(f"the real Shakespeare file is needed for the mirror: {e}")
  mirror, data, cache, work = (tmp_path / n for n in ("mirror", "data", "cache", "work"))
  for folder in (mirror / "shakespeare", data, cache, work, tmp_path / "published"):
    folder.mkdir(parents=True)
  shutil.copy(data_file, mirror / SHAKESPEARE)
  repo_url = _publish(tmp_path / "published")
  start = time.monotonic()
  python = _fresh_venv(tmp_path / "venv")
  venv_s = time.monotonic() - start
  _kernelspec(tmp_path / "jupyter", python)
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  workdir = tmp_path / "runs"
  notebook = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), REPO_URL=repo_url,
                              WORKDIR=str(workdir), **REDUCED)
  client = nbclient.NotebookClient(notebook, timeout=1200, startup_timeout=120,
                                   kernel_name=KERNEL)
  with loopback.serve(mirror) as server:
    env = _clean_env(tmp_path / "venv", CLIPJAX_DATA=str(data), CLIPJAX_CACHE=str(cache),
                     CLIPJAX_DATA_MIRROR=server.url)
    client.execute(cwd=str(work), env=env)
  print(f"fresh venv {venv_s:.0f} s, notebook {time.monotonic() - start - venv_s:.0f} s")

  outputs = _outputs(notebook)
  text = "".join(o.get("text", "") for o in outputs)
  clone = work / "clipjax-repo"
  assert (clone / "setup.cfg").is_file() and f"repository: {clone}" in text
  assert "installing clipjax (missing: clipjax)" in text
  installed = subprocess.run(
      [str(python), "-c", "import clipjax, jax, matplotlib; print(clipjax.__file__)"],
      cwd=tmp_path, env=_clean_env(tmp_path / "venv"), capture_output=True, text=True)
  assert installed.returncode == 0, installed.stderr
  assert pathlib.Path(installed.stdout.strip()).is_relative_to(clone)  # the editable install
  assert ["/" + SHAKESPEARE] == [p for p, _ in server.requests]
  assert (data / SHAKESPEARE).read_bytes() == data_file.read_bytes()
  for method in ("fedavg", "clip_compute"):
    assert (workdir / method / "summary.json").is_file()
  (table,) = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
  rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
  assert rows == ["fedavg", "clip_compute"]
  assert [o for o in outputs if "image/png" in o.get("data", {})]
