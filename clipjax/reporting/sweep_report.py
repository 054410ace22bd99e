"""A sweep folder's report: `tables.md` (a study's grid first, then the per-scenario tables)
and the PNG plots, written beside the runs (`scripts/reproduce.py`, `scripts/make_tables.py`).
"""

from __future__ import annotations

import pathlib
from clipjax.reporting import study_plots, study_tables, sweep_plots, sweep_tables


def study_preface(sweep_file, root, target: float) -> str:
  """The grid table a study's sweep file names in its `STUDY_TABLE` setting
  (`study_tables.grid_table`), under a heading; "" for a sweep file without one (a paper sweep).

  Args:
    sweep_file: the loaded sweep file (`configs.paper.sweep.load_sweep_file`).
    root: the sweep folder.
    target: the target accuracy of the time-to-accuracy columns.
  """
  table = getattr(sweep_file, "STUDY_TABLE", None)
  if not table:
    return ""
  name = sweep_file.__name__.removeprefix("sweep_file_")
  return f"# {name}\n\n{study_tables.grid_table(table, root, target)}\n"


def study_figures(sweep_file, root, out) -> list[pathlib.Path] | None:
  """The PNGs of a study's grid (so far the invariance criteria, `study_plots`): [] for a
  sweep file without one, None without matplotlib."""
  table = getattr(sweep_file, "STUDY_TABLE", None)
  if not table or table.get("kind") != "criteria":
    return []
  return study_plots.plot_criteria(root, table["criteria"], out, table.get("contrast", "random"))


def write(root: str | pathlib.Path, out: str | pathlib.Path | None, target: float,
          plots: bool = True, preface: str = "", sweep_file=None
          ) -> tuple[pathlib.Path, list[pathlib.Path] | None]:
  """Writes `<out>/tables.md` (and the PNG plots) for the sweep under `root`.

  `preface` (Markdown, e.g. a study's grid table) goes before the per-scenario tables; a study's
  `sweep_file` adds its grid's figures (`study_figures`) to the plots.

  Returns:
    The tables file and the PNG files written (None when matplotlib is not installed or
    `plots` is False).

  Raises:
    ValueError: if `root` holds no runs.
  """
  groups = sweep_tables.group(sweep_tables.load_sweep(root))
  out = pathlib.Path(out or root)
  out.mkdir(parents=True, exist_ok=True)
  table_file = out / "tables.md"
  table_file.write_text(preface + sweep_tables.markdown(groups, target))
  pngs = None
  if plots:
    pngs = sweep_plots.plot_sweep(groups, out)
    if pngs is not None and sweep_file is not None:
      pngs += study_figures(sweep_file, root, out)
  return table_file, pngs
