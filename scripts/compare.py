"""Runs several methods on one config (same data, seeds, devices) and prints the comparison.

  python scripts/compare.py --config configs/femnist_clip.py --workdir runs/femnist_a \
      --methods=fedavg,random,ordered,fluid,clip_compute,clip_network --target=0.6

Each method runs in `<workdir>/<method>`; `fluid` runs without SecAgg (it reads individual
updates). Existing finished runs are reused with --reuse. Writes `<workdir>/table.md` and,
with matplotlib installed, `<workdir>/accuracy.png`.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from clipjax import experiment, tables  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent folder of the per-method runs.")
_METHODS = flags.DEFINE_list("methods", ["fedavg", "clip_compute"], "Methods to compare.")
_TARGET = flags.DEFINE_float("target", 0.6, "Target test accuracy for time-to-accuracy.")
_REUSE = flags.DEFINE_bool("reuse", False, "Reuse runs whose summary.json exists.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  del argv
  root = pathlib.Path(_WORKDIR.value)
  runs = {}
  for method in _METHODS.value:
    folder = root / method
    if not (_REUSE.value and (folder / "summary.json").exists()):
      config = _CONFIG.value.copy_and_resolve_references()
      config.method = method
      if method == "fluid":
        config.secagg.enabled = False
      try:
        experiment.run(config, str(folder))
      except ValueError as e:
        sys.exit(f"error: {e}")
    runs[method] = tables.load_run(folder)
  table = tables.comparison_table(runs, _TARGET.value)
  print(table)
  (root / "table.md").write_text(table + "\n")
  tables.plot_accuracy(runs, root / "accuracy.png")


if __name__ == "__main__":
  app.run(main)
