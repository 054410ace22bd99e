"""Runs a sweep (`configs/paper/*.py`, `configs/studies/*.py`) run by run, then writes its
tables and plots.

  python scripts/reproduce.py --config configs/paper/femnist_cnn.py --size cpu
  python scripts/reproduce.py --config configs/paper/cifar10_vgg9.py --size full \
      --seeds 0 --methods fedavg,clip_compute --only_scenario compute
  python scripts/reproduce.py --config configs/paper/femnist_cnn.py --dry_run

Every run goes to `<root>/<sweep>_<size>/<scenario>/<method>/seed<s>` through
`clipjax.experiment.run`: a finished run (its summary.json written under the same config) is
skipped, an interrupted one resumes from its checkpoint, so the same command can be started
again at any time. At the end `clipjax.reporting.sweep_report.write` puts `tables.md` and the PNG plots in
`<root>/<sweep>_<size>/` (`scripts/make_tables.py` redoes that alone); a study file's own
`STUDY_TABLE` grid (`clipjax.reporting.study_tables.grid_table`) goes at the top of `tables.md`.

`--override key=value` (repeatable) sets a config key on every run of the sweep, e.g. to try a
sweep small: `--override rounds=2 --override num_clients=3 --override model.width=0.125`
(the test `tests/test_reproduce.py` does this). Overrides are part of each run's config, so a
folder holding runs of other overrides is refused; use another --root for them. Compiled XLA
programs are cached on disk (`--compilation_cache`), so runs of the same shapes compile once.
"""

import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import _cli  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from clipjax import config_types, experiment  # noqa: E402
from clipjax.reporting import sweep_report  # noqa: E402
from clipjax import cache  # noqa: E402
from configs.paper import sweep  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, "Sweep file, e.g. configs/paper/femnist_cnn.py.")
_SIZE = flags.DEFINE_enum("size", "cpu", ["cpu", "full"], "cpu: sized for 2 CPU cores; full: "
                          "the paper-sized sweep for a GPU.")
_ROOT = flags.DEFINE_string("root", "runs/paper", "Parent folder of the sweep folders.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
_METHODS = flags.DEFINE_list("methods", [], "Methods to run (default: all six; fedavg_plain is "
                             "added beside fluid).")
_SCENARIO = flags.DEFINE_string("only_scenario", "", "Run only this straggler scenario "
                                "(compute | compute_network); default both.")
_OVERRIDE = flags.DEFINE_multi_string("override", [], "key=value set on every run's config "
                                      "(repeatable), e.g. rounds=2 or model.width=0.125.")
_TARGET = flags.DEFINE_float("target_accuracy", None, "Target accuracy of the time-to-accuracy "
                             "columns (default: the sweep file's TARGET_ACCURACY for --size).")
_COMPILE_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "Folder of JAX's persistent compilation cache, shared by the "
    "runs of a sweep and by later invocations (default: $CLIPJAX_CACHE/jax, i.e. "
    "~/.cache/clipjax/jax; '' turns it off).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs and their state; run nothing.")
flags.mark_flags_as_required(["config"])


def run_state(folder: pathlib.Path, config) -> str:
  """`finished` (summary.json written under this config), `partial (k rounds)` or `new`."""
  config_file, metrics = folder / "config.json", folder / "metrics.jsonl"
  same = config_file.exists() and config_types.same_run_config(config_file.read_text(), config)
  if same and (folder / "summary.json").exists():
    return "finished"
  if metrics.exists():
    rounds = sum(1 for line in metrics.read_text().splitlines() if line.strip())
    return f"partial ({rounds} rounds written)" if same else "other config"
  return "new"


def _clock(seconds: float) -> str:
  minutes, s = divmod(int(seconds), 60)
  return f"{minutes // 60}h{minutes % 60:02d}m{s:02d}s"


def _plan(module, size: str):
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    raise ValueError(f"--seeds must be integers separated by commas, got {_SEEDS.value}.") from None
  kwargs = {"seeds": seeds, "overrides": sweep.parse_overrides(_OVERRIDE.value)}
  if _METHODS.value:
    kwargs["methods"] = _METHODS.value
  if _SCENARIO.value:
    kwargs["scenarios"] = [_SCENARIO.value]
  return module.get_sweep(size, **kwargs)


def _target(module, size: str) -> float:
  if _TARGET.value is not None:
    return _TARGET.value
  targets = getattr(module, "TARGET_ACCURACY", {})
  if size not in targets:
    raise ValueError(f"{_CONFIG.value} has no TARGET_ACCURACY[{size!r}]; pass --target_accuracy.")
  return float(targets[size])


def _use_compilation_cache() -> None:
  """Compiled XLA programs go to disk: runs that share shapes (methods, scenarios) and later
  invocations skip most compilation, which dominates short runs on CPU."""
  folder = cache.cache_dir() / "jax" if _COMPILE_CACHE.value is None else _COMPILE_CACHE.value
  if folder:
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  size = _SIZE.value
  try:
    module = sweep.load_sweep_file(_CONFIG.value)
    runs = _plan(module, size)
    target = _target(module, size)
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")
  root = pathlib.Path(_ROOT.value) / f"{pathlib.Path(_CONFIG.value).stem}_{size}"
  if _DRY_RUN.value:
    for k, (name, c) in enumerate(runs, 1):
      d = c.devices
      print(f"[{k}/{len(runs)}] {root / name}: {run_state(root / name, c)}; {c.data.name} "
            f"{c.model.name} x{c.model.width}, {c.num_clients} clients, {c.rounds} rounds, "
            f"{c.local_epochs} epoch(s), secagg {'on' if c.secagg.enabled else 'off'}, slow "
            f"compute/network/both {d.compute_slow}/{d.network_slow}/{d.both_slow}")
    return
  other = [name for name, c in runs if run_state(root / name, c) == "other config"]
  if other:  # refused before anything is written
    sys.exit(f"error: {root / other[0]} holds a run of another config (other --override values, "
             f"or changed defaults; {len(other)} run folder(s) so); use another --root, or delete "
             "those folders to start over.")
  if root.exists() and not root.is_dir():
    sys.exit(f"error: {root} is a file, not a folder; choose another --root.")
  root.mkdir(parents=True, exist_ok=True)
  _use_compilation_cache()
  (root / "sweep.json").write_text(json.dumps({
      "config": _CONFIG.value, "size": size, "target_accuracy": target,
      "overrides": _OVERRIDE.value, "runs": [name for name, _ in runs]}, indent=2) + "\n")
  start, ran, skipped = time.monotonic(), 0, 0
  for k, (name, config) in enumerate(runs, 1):
    state = run_state(root / name, config)
    print(f"[{k}/{len(runs)}] {name}: {state}; elapsed {_clock(time.monotonic() - start)}, "
          f"ran {ran}, skipped {skipped}", flush=True)
    if state == "finished":
      skipped += 1
      continue
    if state == "other config":
      sys.exit(f"error: {root / name} holds a run of another config (other --override values, "
               "or changed defaults); use another --root, or delete that folder to start over.")
    try:
      experiment.run(config, str(root / name))
    except (ValueError, FileNotFoundError) as e:
      sys.exit(f"error: {name}: {e}")
    ran += 1
  print(f"sweep {root}: {len(runs)} runs, ran {ran}, skipped {skipped} (finished earlier), "
        f"{_clock(time.monotonic() - start)}", flush=True)
  try:
    table_file, plots = sweep_report.write(root, root, target,
                                           preface=sweep_report.study_preface(module, root, target),
                                           sweep_file=module)
  except ValueError as e:
    sys.exit(f"error: {e}")
  print(table_file.read_text())
  print(f"tables: {table_file}")
  print(f"plots: {', '.join(str(p) for p in plots)}" if plots is not None
        else "plots skipped: matplotlib is not installed (pip install -e '.[plots]').")


if __name__ == "__main__":
  _cli.run(main)
