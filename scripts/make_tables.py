"""Markdown tables and PNG plots of a sweep folder written by `scripts/reproduce.py`.

  python scripts/make_tables.py --root runs/paper/femnist_cnn_cpu
  python scripts/make_tables.py --root runs/paper/femnist_cnn_cpu --out /tmp/t --target_accuracy 0.65

Groups the runs `<root>/<scenario>/<method>/seed<s>` by (scenario, method) over seeds
(`clipjax.reporting.sweep_tables`) and writes `<out>/tables.md`: mean virtual round time and its cut
against `fedavg` (runs without SecAgg against `fedavg_plain`), time to the target accuracy and
its cut, final accuracy with its 95% t-interval over seeds, the accuracy delta paired by seed
with its interval, straggler keep fractions, invariant/slack counts and the compute tier. With
matplotlib installed, also per scenario: accuracy vs virtual time with seed bands, round time,
keep fractions and unit counts per round (`clipjax.reporting.sweep_plots`). Partial runs are included
as they stand. The default target is the one `reproduce.py` wrote to `<root>/sweep.json`; when
that names a study file (`configs/studies/`), its grid table comes first.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _cli  # noqa: E402
from absl import app, flags  # noqa: E402

from clipjax.reporting import sweep_report, sweep_tables  # noqa: E402
from configs.paper import sweep  # noqa: E402

_ROOT = flags.DEFINE_string("root", None, "Sweep folder, e.g. runs/paper/femnist_cnn_cpu.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: --root).")
_TARGET = flags.DEFINE_float("target_accuracy", None, "Target test accuracy for the "
                             "time-to-accuracy columns (default: <root>/sweep.json's).")
_COMPACT = flags.DEFINE_bool("compact", False, "Print only the comparison columns "
                             "(sweep_tables.COMPACT) to stdout, as in configs/paper/README.md; "
                             "writes nothing.")
flags.mark_flags_as_required(["root"])


def _target(root: pathlib.Path) -> float:
  if _TARGET.value is not None:
    return _TARGET.value
  manifest = root / "sweep.json"
  if manifest.exists():
    return float(json.loads(manifest.read_text())["target_accuracy"])
  raise ValueError(f"{manifest} not found (it is written by scripts/reproduce.py); "
                   "pass --target_accuracy.")


def _sweep_file(root: pathlib.Path):
  """The sweep file `<root>/sweep.json` names (a study's brings its grid table), or None."""
  manifest = root / "sweep.json"
  if not manifest.exists():
    return None
  config = json.loads(manifest.read_text()).get("config")
  if not config or not pathlib.Path(config).is_file():
    return None
  return sweep.load_sweep_file(config)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  root = pathlib.Path(_ROOT.value)
  try:
    target = _target(root)
    if _COMPACT.value:
      print(sweep_tables.markdown(sweep_tables.group(sweep_tables.load_sweep(root)), target,
                                  compact=True))
      return
    sweep_file = _sweep_file(root)
    preface = "" if sweep_file is None else sweep_report.study_preface(sweep_file, root, target)
    table_file, plots = sweep_report.write(root, _OUT.value, target, preface=preface,
                                           sweep_file=sweep_file)
  except ValueError as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")
  print(table_file.read_text())
  print(f"tables: {table_file}")
  print(f"plots: {', '.join(str(p) for p in plots)}" if plots is not None
        else "plots skipped: matplotlib is not installed (pip install -e '.[plots]').")


if __name__ == "__main__":
  _cli.run(main)
