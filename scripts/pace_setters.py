"""Who sets each round's pace? The slowest surviving client of every finished round, by device.

Issue 26 asks whether network stragglers stop setting the round's pace once their upload
follows their link (`clip.upload=planes`). For every run folder under `--sweep` (a
`scripts/reproduce.py` sweep: `<scenario>/<method>/seed<s>/`), this rebuilds the run's device
population from its `config.json` (`clipjax.round.build.device_population`: which cohort
positions got the slow CPU, the slow link or both) and reads `metrics.jsonl`: in each finished
round, the survivor with the largest `client_time_s` paced it (the server's seconds come after
every client's). Per scenario and method, over the seeds:

  paced by a slow link   rounds whose slowest client has only the slow network tier, %;
  paced by slow both     rounds whose slowest client has the slow CPU and the slow link, %;
  paced by a slow CPU    rounds whose slowest client has only the slow compute tier, %;
  paced by a fast device the rest, %;
  upload share           the pacing client's upload seconds / its time, mean over rounds.

  python scripts/pace_setters.py --sweep runs/studies/upload_planes_cpu
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import sys

from absl import flags
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

from clipjax import config_types  # noqa: E402
from clipjax.reporting import summary as summary_lib, sweep_tables  # noqa: E402
from clipjax.round import build  # noqa: E402

_SWEEP = flags.DEFINE_string("sweep", None, "Folder of a scripts/reproduce.py sweep.")
KINDS = ("link", "both", "cpu", "fast")


def device_kinds(config: dict) -> np.ndarray:
  """str[K]: each population client's device, "link" (slow network tier only), "both" (slow
  link and slow CPU), "cpu" (slow CPU only) or "fast", rebuilt from a stored run config."""
  spec = config_types.ExperimentSpec.from_config(ml_collections.ConfigDict(config))
  population = build.device_population(spec)
  network = np.asarray(population.network_slow, bool)
  compute = np.asarray(population.compute_slow, bool)
  return np.where(network & compute, "both",
                  np.where(network, "link", np.where(compute, "cpu", "fast")))


def pace(history: list[dict], kinds: np.ndarray) -> dict:
  """Counts of finished rounds paced by each device kind, and the pacing clients' upload
  shares (`history`: metrics rows; `kinds`: `device_kinds`, by population id)."""
  counts = collections.Counter({k: 0 for k in KINDS})
  shares = []
  for row in history:
    if "survivors" not in row or "client_time_s" not in row or row.get("aborted"):
      continue
    alive = np.asarray(row["survivors"], bool)
    if not alive.any():
      continue
    total = np.where(alive, np.asarray(row["client_time_s"], np.float64), -np.inf)
    slowest = int(np.argmax(total))
    ids = row.get("cohort", list(range(len(alive))))
    counts[str(kinds[ids[slowest]])] += 1
    shares.append(row["upload_s"][slowest] / row["client_time_s"][slowest])
  return {"counts": dict(counts), "upload_share": shares}


def main(argv):
  if len(argv) > 1 or not _SWEEP.value:
    sys.exit("usage: pace_setters.py --sweep <folder of a scripts/reproduce.py sweep>")
  sweep = pathlib.Path(_SWEEP.value)
  try:
    found = [run for run in sweep_tables.load_sweep(sweep) if run.config]
  except ValueError:
    found = []
  if not found:
    sys.exit(f"error: no run folders (<scenario>/<method>/seed<s>/ with metrics.jsonl and "
             f"config.json) under {sweep}; run scripts/reproduce.py first.")
  merged: dict = {}
  for run in found:
    got = pace(run.history, device_kinds(run.config))
    m = merged.setdefault((run.scenario, run.method), {"counts": collections.Counter(),
                                                       "share": [], "seeds": 0})
    m["counts"].update(got["counts"])
    m["share"] += got["upload_share"]
    m["seeds"] += 1
  rows, out = [], []
  for (scenario, method), m in merged.items():
    rounds = sum(m["counts"].values())
    pct = {k: 100.0 * m["counts"][k] / max(rounds, 1) for k in KINDS}
    share = float(np.mean(m["share"])) if m["share"] else float("nan")
    rows.append([scenario, method, m["seeds"], rounds, *(f"{pct[k]:.0f}%" for k in KINDS),
                 f"{share:.2f}"])
    out.append({"scenario": scenario, "method": method, "seeds": m["seeds"], "rounds": rounds,
                **{f"paced_by_{k}": pct[k] for k in KINDS}, "upload_share": share})
  print(summary_lib.markdown_table(["scenario", "method", "seeds", "rounds",
                                    "paced by a slow link", "paced by slow both",
                                    "paced by a slow CPU", "paced by a fast device",
                                    "upload share"], rows))
  print(json.dumps({"sweep": str(sweep), "rows": out}))


if __name__ == "__main__":
  _cli.run(main)
