"""Is relaying time reports over two hops of the SecAgg+ graph worth its messages? (issue 27)

A Monte Carlo of the straggler decision alone, no training: for each paper-sweep size (n
clients, the analysed SecAgg+ degree k, s = 20% slow clients), draw the round's random Harary
graph and every client's total time (fast 1, slow `--slow_factor`, both times log-normal
jitter `--jitter`), and decide with DESIGN 2.2's rule (own total above the type-7
0.8-quantile of the times it knows) from
  neighbours  its own time and its k neighbours' (`clip.straggler_info=neighbours`),
  two_hop     also its neighbours' neighbours' (each client relays the reports it heard),
  histogram   every client's, binned (`clip.straggler_info=histogram`, 256 bins),
against the decision with every time heard. Recall: of the clients that decision flags, the
share also flagged; precision: of those flagged, the share it flags too.

Costs per client and round: reports received (sealed, 8 bytes of times each); `two_hop` needs
a second exchange after the first (a relay can only forward what it has received), i.e. one
more message each way, or one more round of lag if it rides in the next ShareKeys.

  python scripts/straggler_info_analysis.py            # the table and a JSON line
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

from clipjax.clip import histogram as histogram_lib  # noqa: E402
from clipjax.secagg import graph as graph_lib  # noqa: E402
from clipjax.secagg import params as params_lib  # noqa: E402

_TRIALS = flags.DEFINE_integer("trials", 2000, "Rounds drawn per setting.")
_SLOW = flags.DEFINE_float("slow_factor", 1.5, "Slow clients' total time / fast clients' "
                           "(a 2/3-speed CPU on a compute-bound round).")
_JITTER = flags.DEFINE_float("jitter", 0.05, "Log-normal sigma of every time "
                             "(devices.jitter_sigma's default).")
_SETTINGS = flags.DEFINE_list("clients", ["10", "20", "50", "200", "1000"],
                              "Cohort sizes n; k is the analysed SecAgg+ degree of each.")

Q = 0.8  # 1 - straggler_fraction


def _flags_from(times: np.ndarray, known: list[np.ndarray]) -> np.ndarray:
  """bool[n]: client i is flagged from its own time and the times of `known[i]` (ids)."""
  return np.array([times[i] > np.quantile(np.concatenate([[times[i]], times[ids]]), Q)
                   for i, ids in enumerate(known)])


def _two_hop(neighbours: list[tuple[int, ...]]) -> list[np.ndarray]:
  out = []
  for i, mine in enumerate(neighbours):
    reach = set(mine)
    for j in mine:
      reach.update(neighbours[j])
    reach.discard(i)
    out.append(np.fromiter(sorted(reach), int))
  return out


def _recall_precision(flagged: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
  return int((flagged & truth).sum()), int(truth.sum()), int(flagged.sum())


def analyse(n: int, trials: int, slow_factor: float, jitter: float, seed: int = 0) -> dict:
  k = params_lib.choose_parameters(n, protocol="secagg+").degree
  s = max(1, round(0.2 * n))
  edge = histogram_lib.edges()
  rng = np.random.default_rng(seed)
  tally = {name: np.zeros(3, int) for name in ("neighbours", "two_hop", "histogram")}
  heard = {"neighbours": 0.0, "two_hop": 0.0}
  for trial in range(trials):
    nb = graph_lib.neighbour_lists(n, graph_lib.random_harary_graph(n, k, seed=trial))
    hop2 = _two_hop(nb)
    base = np.where(np.arange(n) < s, slow_factor, 1.0)[rng.permutation(n)]
    times = base * np.exp(jitter * rng.standard_normal(n))
    truth = times > np.quantile(times, Q)
    hist = histogram_lib.TimeHistograms.of(times, np.zeros(n), edge)
    decisions = {"neighbours": _flags_from(times, [np.asarray(x, int) for x in nb]),
                 "two_hop": _flags_from(times, hop2),
                 "histogram": hist.flags(times, np.zeros(n), 1 - Q)}
    for name, flagged in decisions.items():
      tally[name] += _recall_precision(np.asarray(flagged, bool), truth)
    heard["neighbours"] += k / trials
    heard["two_hop"] += np.mean([len(h) for h in hop2]) / trials
  out = {"n": n, "k": k, "slow": s, "trials": trials}
  for name, (hit, true, flagged) in tally.items():
    out[name] = {"recall": hit / max(true, 1), "precision": hit / max(flagged, 1)}
  out["reports_heard"] = {"neighbours": heard["neighbours"], "two_hop": heard["two_hop"],
                          "histogram": n - 1}
  out["histogram_words"] = histogram_lib.words(histogram_lib.DEFAULT_BINS)
  return out


def main(argv):
  del argv
  rows = [analyse(int(n), _TRIALS.value, _SLOW.value, _JITTER.value) for n in _SETTINGS.value]
  print(f"slow/fast total time {_SLOW.value}, jitter sigma {_JITTER.value}, "
        f"{_TRIALS.value} rounds per row; recall / precision against every time heard\n")
  print("| n | k | slow | neighbours R / P | two hops R / P | histogram R / P | reports heard: "
        "neighbours / two hops |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    rp = lambda m: f"{r[m]['recall']:.3f} / {r[m]['precision']:.3f}"  # noqa: E731
    print(f"| {r['n']} | {r['k']} | {r['slow']} | {rp('neighbours')} | {rp('two_hop')} | "
          f"{rp('histogram')} | {r['reports_heard']['neighbours']:.0f} / "
          f"{r['reports_heard']['two_hop']:.1f} |")
  print(json.dumps({"bench": "straggler_info_analysis", "slow_factor": _SLOW.value,
                    "jitter": _JITTER.value, "rows": rows}))


if __name__ == "__main__":
  _cli.run(main)
