"""Runs one clipjax experiment from a config file.

  python scripts/train.py --config configs/quickstart.py --workdir runs/quickstart \
      --config.rounds=5 --config.method=clip_compute --config.secagg.enabled=True
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from clipjax import experiment  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for config.json, metrics.jsonl, checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    experiment.run(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
