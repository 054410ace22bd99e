"""Runs several methods on one config (same data, seeds, devices) and prints the comparison.

  python scripts/compare.py --config configs/femnist_clip.py --workdir runs/femnist_a \
      --methods=fedavg,random,ordered,fluid,clip_compute,clip_network --target=0.6

Each method runs in `<workdir>/<method>`. `fluid` runs without SecAgg (it reads individual
updates), so whenever it is compared a `fedavg_plain` row (fedavg without SecAgg) is added and
`fluid` is measured against it: protocol cost and pruning gain are not confused (DESIGN 2.8).
Every round is evaluated (`--eval_every=1`, the default here) so time to accuracy is a
round's end, not a multiple of the evaluation spacing. Existing finished runs are reused with
--reuse. Writes `<workdir>/table.md` and, with matplotlib installed, `<workdir>/accuracy.png`.
With `--seeds=0,1,2` every method runs once per seed (`<workdir>/seed<s>/<method>`) and
`<workdir>/seeds.md` gives mean ± sample sd over the seeds.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _cli  # noqa: E402
from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from clipjax import experiment, methods  # noqa: E402
from clipjax.config_types import ExperimentSpec  # noqa: E402
from clipjax.reporting import tables  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent folder of the per-method runs.")
_METHODS = flags.DEFINE_list("methods", ["fedavg", "clip_compute"], "Methods to compare.")
_TARGET = flags.DEFINE_float("target", 0.6, "Target test accuracy for time-to-accuracy.")
_REUSE = flags.DEFINE_bool("reuse", False, "Reuse runs whose summary.json exists.")
_SEEDS = flags.DEFINE_list("seeds", [], "Run every method for each of these seeds, in "
                           "<workdir>/seed<s>/<method>, and add a mean ± sd table over seeds.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 1, "Evaluate every k rounds (1: time to "
                                   "accuracy is exact to the round).")
flags.mark_flags_as_required(["config", "workdir"])


def method_configs(config, names):
  """{run name: config} for the methods asked, with `fedavg_plain` added beside `fluid`
  (`clipjax.methods.with_plain_reference`); those two run without SecAgg, the others as
  `config` says."""
  out = {}
  for name in methods.with_plain_reference(names):
    c = config.copy_and_resolve_references()
    c.method = methods.base_method(name)
    if methods.runs_without_secagg(name):
      c.secagg.enabled = False
    out[name] = c
  return out


def check_configs(configs) -> None:
  """Every run's config validated before any run trains (one clear line on the first error).

  Raises:
    ValueError: for an unknown method name or a bad config value.
  """
  for name in configs:
    if name != methods.PLAIN_REFERENCE and name not in methods.METHODS:
      raise ValueError(f"--methods has {name!r}; choose from {tuple(methods.METHODS)} (and "
                       f"{methods.PLAIN_REFERENCE!r}).")
  for name, c in configs.items():
    try:
      ExperimentSpec.from_config(c)
    except ValueError as e:
      raise ValueError(f"{name}: {e}") from None


def _compare(config, root: pathlib.Path) -> dict:
  runs = {}
  for method, method_config in method_configs(config, _METHODS.value).items():
    folder = root / method
    if not (_REUSE.value and (folder / "summary.json").exists()):
      try:
        experiment.run(method_config, str(folder))
      except (ValueError, FileNotFoundError) as e:  # bad input: one clear line
        sys.exit(f"error: {e}")
    runs[method] = tables.load_run(folder)
  table = tables.comparison_table(runs, _TARGET.value)
  print(table)
  (root / "table.md").write_text(table + "\n")
  tables.plot_accuracy(runs, root / "accuracy.png")
  return runs


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  del argv
  root = pathlib.Path(_WORKDIR.value)
  base = _CONFIG.value.copy_and_resolve_references()
  base.eval_every = _EVAL_EVERY.value
  try:
    check_configs(method_configs(base, _METHODS.value))
  except ValueError as e:  # bad input: one clear line, before anything is trained
    sys.exit(f"error: {e}")
  if not _SEEDS.value:
    _compare(base, root)
    return
  by_seed = {}
  for seed in (int(s) for s in _SEEDS.value):
    config = base.copy_and_resolve_references()
    config.seed = seed
    by_seed[seed] = _compare(config, root / f"seed{seed}")
  table = tables.seed_table(by_seed)
  print(table)
  (root / "seeds.md").write_text(table + "\n")


if __name__ == "__main__":
  _cli.run(main)
