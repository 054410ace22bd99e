"""The quickstart notebook runs end to end on real FEMNIST at a reduced setting (nbclient)."""

import pathlib

import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed "
                               "(pip install -e '.[test]' installs nbclient, nbformat, ipykernel)")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed "
                               "(pip install -e '.[test]')")

from clipjax.data import paths  # noqa: E402

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "clip_quickstart.ipynb"


def _reduced(notebook, workdir: pathlib.Path):
  """Adds a cell after the one tagged `parameters` that shrinks the run (papermill's way)."""
  (index,) = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
      f"NUM_WRITERS = 3\nROUNDS = 2\nWIDTH = 0.125\nWORKDIR = {str(workdir)!r}"))
  return notebook


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
  try:
    paths.find_data_file("femnist/femnist_leaf_300writers_uint8.npz", "femnist")
  except FileNotFoundError:
    pytest.skip("real FEMNIST data not found ($CLIPJAX_DATA or ../shared/data)")
  pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e '.[test]')")
  notebook = _reduced(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
  client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()
  table = (tmp_path / "tables.md").read_text()
  assert "| fedavg | on |" in table and "| clip_compute | on |" in table
  for method in ("fedavg", "clip_compute"):
    assert (tmp_path / "compute" / method / "seed0" / "summary.json").exists()
  outputs = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
  assert "FEMNIST:" in outputs
