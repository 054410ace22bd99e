"""Where a round's host time goes, per paper sweep config: training, secure sum, evaluation, other.

For each paper sweep's CPU config (`configs/paper/{femnist_cnn,cifar10_vgg9,shakespeare_lstm}.py`,
`clip_compute`, scenario `compute`, seed 0) and each `secagg.simulate` mode (`protocol`: the
whole SecAgg+ protocol with every mask expanded; `sum`: its exact output without the masks that
cancel), one process runs `--rounds` rounds without evaluation and reports the mean host seconds
of the rounds after the first `--warmup`, split as the loop measures them (`metrics.jsonl`):
training (`host_seconds_train`), the secure sum (`host_seconds_sum` + `host_seconds_secagg`:
encoding, masking, unmasking), evaluation (`host_seconds_eval`, 0 here) and the rest (key
agreement, ShareKeys, the sealed time reports, the straggler decision, the clock). The
training share is training / total. The warm-up leaves out two rounds: the first compiles
training and the secure sum, the second (the first to broadcast times and prune) the straggler
decision, ~2.7 s for FEMNIST on 2 cores, once per run (sweeps cache it on disk). Round times
on the virtual clock are the same in both modes (the clock charges the protocol's work).

  python scripts/bench_round.py                          # all three configs, both modes
  python scripts/bench_round.py --configs=femnist_cnn --rounds=6

Prints a Markdown table and one JSON line.
"""

import importlib
import json
import pathlib
import platform
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _cli  # noqa: E402
from absl import flags, logging  # noqa: E402

_CONFIGS = flags.DEFINE_list("configs", ["femnist_cnn", "cifar10_vgg9", "shakespeare_lstm"],
                             "Paper sweep files in configs/paper/.")
_MODES = flags.DEFINE_list("modes", ["protocol", "sum"], "secagg.simulate modes.")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "Rounds per run, the --warmup first ones left out.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Rounds left out: they compile.")
_METHOD = flags.DEFINE_string("method", "clip_compute", "Method to run.")


def config_for(name: str, mode: str):
  """The paper sweep's CPU config of `name` (method, scenario `compute`, seed 0), shortened."""
  sweep_file = importlib.import_module(f"configs.paper.{name}")
  (_, c), = sweep_file.get_sweep("cpu", seeds=[0], methods=[_METHOD.value], scenarios=["compute"])
  c.rounds = _ROUNDS.value
  c.eval_every = 0
  c.checkpoint_every = 0
  c.secagg.simulate = mode
  return c


def measure(name: str, mode: str) -> dict:
  """Mean host seconds of the rounds after the warm-up of one run, split by part."""
  from clipjax import experiment  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as workdir:
    experiment.run(config_for(name, mode), workdir)
    rows = [json.loads(x) for x in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  warm = rows[_WARMUP.value:] or rows
  mean = lambda key: sum(r.get(key, 0.0) for r in warm) / len(warm)  # noqa: E731
  total, train, ev = mean("host_seconds"), mean("host_seconds_train"), mean("host_seconds_eval")
  secure = mean("host_seconds_sum") + mean("host_seconds_secagg")
  return {"config": name, "mode": mode, "rounds_measured": len(warm), "host_s": total,
          "train_s": train, "secure_sum_s": secure, "eval_s": ev,
          "other_s": total - train - secure - ev, "train_share": train / total,
          "virtual_round_s": sum(r["round_time_s"] for r in warm) / len(warm)}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  results = [measure(name, mode) for name in _CONFIGS.value for mode in _MODES.value]
  print("| config | simulate | host s / round | training | secure sum | evaluation | other | "
        "training share | virtual round s |")
  print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
  for r in results:
    print(f"| {r['config']} | {r['mode']} | {r['host_s']:.3f} | {r['train_s']:.3f} | "
          f"{r['secure_sum_s']:.3f} | {r['eval_s']:.3f} | {r['other_s']:.3f} | "
          f"{100 * r['train_share']:.1f}% | {r['virtual_round_s']:.4f} |")
  print(json.dumps({"bench": "round", "machine": platform.machine(), "processor":
                    platform.processor(), "rounds": _ROUNDS.value, "warmup": _WARMUP.value,
                    "results": results}))


if __name__ == "__main__":
  _cli.run(main)
