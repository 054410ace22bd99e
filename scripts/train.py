"""Runs one clipjax experiment from a config file.

  python scripts/train.py --config configs/quickstart.py --workdir runs/quickstart \
      --config.rounds=5 --config.method=clip_compute --config.secagg.enabled=True

Started again, the same command resumes from the newest checkpoint; with a larger
--config.rounds it extends a run (not `fluid`, whose schedule depends on the total).

Several processes (hosts), each training its slice of every cohort (DESIGN 2.9): start the
same command on every host with its own --process_id; process 0 writes the outputs and the
checkpoints. To resume, start them all again: every process restores process 0's checkpoint,
so --workdir must be one folder that every host shares. Ctrl-C on any host stops all of them
after the same round.

  python scripts/train.py --config ... --workdir ... --coordinator=host0:1234 \
      --num_processes=2 --process_id=0      # on host 0; process_id=1 on host 1
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _cli  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from clipjax import experiment, multihost  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for config.json, metrics.jsonl, checkpoints.")
_COORDINATOR = flags.DEFINE_string("coordinator", "localhost:12355",
                                   "host:port of process 0 (several processes only).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes running this experiment.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    processes = multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    experiment.run(_CONFIG.value, _WORKDIR.value, processes=processes)
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")
  except experiment.Interrupted as e:  # Ctrl-C: one line saying how to go on
    print(e, file=sys.stderr)
    sys.exit(130)
  except KeyboardInterrupt:  # before the first round (loading data, compiling)
    print("stopped before the first round; nothing was run.", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
  _cli.run(main)
