"""Does CLIP's invariance rule discriminate? Two measurements (docs/design.md 2.4).

What they found is DESIGN 2.4's last point; the numbers were in the README until commit 6f8a090
(`git show 6f8a090^:README.md`, "Invariance scores").

  # how often a pruning client's invariant count lies in the band [m, 2m], per run folder
  python scripts/invariance_report.py --runs=runs/fidelity/e1/clip_compute,runs/score/l2_s0
  # how stable each score ranks units between consecutive rounds of plain FedAvg
  python scripts/invariance_report.py --stability_config=configs/femnist_clip.py:a \
      --stability_config.model.width=0.25 --rounds=12

The band check sums m over layers (metrics carry counts summed over layers). Stability is the
Spearman rank correlation, per prunable layer, between the unit scores of rounds r and r - 1.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import _cli  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from clipjax import config_types  # noqa: E402
from clipjax.reporting import summary as summary_lib  # noqa: E402
from clipjax.clip import invariance  # noqa: E402
from clipjax.round import build  # noqa: E402
from clipjax.models import get_model, units  # noqa: E402

_RUNS = flags.DEFINE_list("runs", [], "Run folders (metrics.jsonl + config.json).")
_CONFIG = config_flags.DEFINE_config_file("stability_config", None, "Config for the stability run.")
_ROUNDS = flags.DEFINE_integer("rounds", 12, "FedAvg rounds of the stability run.")


def _drops(sizes, p):
  """Units a client with keep fraction p drops, summed over layers (the rule training uses)."""
  return sum(int(invariance.units_to_drop(n, p)) for n in sizes)


def band_counts(folder: pathlib.Path) -> tuple:
  config = json.loads((folder / "config.json").read_text())
  sizes = list(get_model(config["model"]["name"], num_classes=62,
                         width=config["model"]["width"]).width_dict.values())
  below = inside = above = 0
  ratios = []
  for line in (folder / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    for c, p in enumerate(row.get("keep_fraction", [])):
      if p < 1.0:
        m, k = _drops(sizes, p), row["invariant_units"][c]
        below, inside, above = below + (k < m), inside + (m <= k <= 2 * m), above + (k > 2 * m)
        ratios.append(k / m)
  return (str(folder), below + inside + above, inside, below, above,
          round(float(np.median(ratios)), 2) if ratios else "")


def _spearman(a, b) -> float:
  ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(ra, rb)[0, 1])


def stability(config, rounds: int) -> list[tuple]:
  config.method, config.rounds = "fedavg", rounds
  spec = config_types.ExperimentSpec.from_config(config)
  data = build.load_data(spec)
  model, params = build.init_model(spec, data.num_classes)
  algo = build.build_round(spec, data, model, params)
  state, last, rows = algo.init(params), None, []
  for r in range(rounds):
    before = state.server.params
    state, _ = algo.apply(state, r)
    now = {kind: units.unit_scores(model.unit_spec, state.server.params, before, kind=kind)
           for kind in units.SCORES}
    if last is not None and r >= 2:  # round 1's change (from the initial model) is atypical
      for kind in units.SCORES:
        rows.append((r + 1, kind, *[round(_spearman(np.asarray(now[kind][k]),
                                                    np.asarray(last[kind][k])), 2)
                                    for k in now[kind]]))
    last = now
  return rows, list(model.width_dict)


def main(argv):
  del argv
  try:
    _report()
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")


def _report():
  if _RUNS.value:
    print(summary_lib.markdown_table(
        ["run", "pruning client-rounds", "in [m, 2m]", "below m", "above 2m",
         "median invariant / m"], [band_counts(pathlib.Path(f)) for f in _RUNS.value]))
  if _CONFIG.value is not None:
    rows, layers = stability(_CONFIG.value, _ROUNDS.value)
    print(summary_lib.markdown_table(["round", "score"] + [f"Spearman {k}" for k in layers], rows))


if __name__ == "__main__":
  _cli.run(main)
