"""How every script starts: `absl.app.run` with two fixes a user meets first.

* `--help` (and `-h`, `--helpshort`, `--helpfull`) prints the usage and exits 0; absl exits 1.
* A `--config.<key>=...` override naming no key of the config ends in one line that names the
  closest valid key (ml_collections' own suggestion), not a 50-line traceback.
"""

import sys

from absl import app

_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def run(main) -> None:
  """`app.run(main)` with the fixes above."""
  started = []

  def entry(argv):
    started.append(True)
    return main(argv)

  asks_help = any(a.split("=")[0] in _HELP for a in sys.argv[1:])
  try:
    app.run(entry)
  except SystemExit as e:
    if asks_help and not started and e.code in (1, None):
      sys.exit(0)
    raise
  except (AttributeError, KeyError) as e:
    if started:  # raised by the script itself: a bug, keep its traceback
      raise
    text = str(e.args[0] if e.args else e).replace("\\'", "'").replace("\\n", "\n")
    key, _, hint = text.strip("'\" ").partition("\n")
    sys.exit(f"error: a --config. override names no key of the config: {key.strip(chr(39))}. "
             f"{hint.strip()} (see the config file, or configs/base.py, for every key)")
