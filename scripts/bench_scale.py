"""Host time per round and peak memory as the cohort grows (DESIGN 2.9).

A population of CIFAR-10 partitions (default 1,000 IID partitions of 50 training images), VGG-9
at a stated width, SecAgg+ on, `clip_compute` (rounds from the second on broadcast sealed times
and prune). For each cohort size C, one fresh process runs `--rounds` rounds with the cohort
trained and securely summed in chunks of `--chunk` clients, and reports the host seconds of its
last round (the first compiles) split into training, masking (every client's ChaCha20 mask
expansion for its 1 + k streams: the simulator really computes each masked vector), unmasking
and the rest (key agreement, ShareKeys, the sealed broadcast), and its peak resident memory
(`ru_maxrss`, the whole process: Python, JAX, the population's data). `--simulate=sum` computes
the protocol's exact output without key agreement, mask expansion or sealed reports
(`clipjax.secagg.fast_sum`): the masking column then times the encoding alone. One process per C,
because peak memory only grows. SecAgg+'s degree k grows like log C, so masking work grows
like C (1 + k): the last-but-one column divides it out.

  python scripts/bench_scale.py                          # C = 10, 100, 1000, chunk 50
  python scripts/bench_scale.py --cohorts=10,100 --chunk=25 --width=0.125
  python scripts/bench_scale.py --cohorts=1000 --simulate=sum   # no masks, keys or sealing

Prints a Markdown table and one JSON line. The images are real; the JPEG archive is prepared
once into $CLIPJAX_CACHE.
"""

import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import _cli  # noqa: E402
from absl import flags  # noqa: E402

_COHORTS = flags.DEFINE_list("cohorts", ["10", "100", "1000"], "Cohort sizes C per round.")
_POPULATION = flags.DEFINE_integer("population", 1000, "CIFAR-10 IID partitions K.")
_CHUNK = flags.DEFINE_integer("chunk", 50, "Clients trained and summed at once (0: all).")
_WIDTH = flags.DEFINE_float("width", 0.25, "VGG-9 width multiplier.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds per process; the last one is reported.")
_METHOD = flags.DEFINE_string("method", "clip_compute", "Method to run.")
_SIMULATE = flags.DEFINE_enum("simulate", "protocol", ["protocol", "sum"],
                              "secagg.simulate: the whole protocol, or its exact output without "
                              "keys, masks or sealed reports (the clock charges the same).")
_ONE = flags.DEFINE_integer("one", 0, "Internal: run one cohort size in this process.")
_OUT = flags.DEFINE_string("out", "", "Internal: where the one-cohort run writes its result.")


def config_for(cohort: int):
  from configs import cifar10_vgg9
  c = cifar10_vgg9.get_config()
  c.rounds = _ROUNDS.value
  c.num_clients = _POPULATION.value
  c.cohort_size = cohort
  c.local_epochs = 1
  c.eval_every = 0
  c.checkpoint_every = 0
  c.data.partition = "iid"
  c.data.num_partitions = 0
  c.model.width = _WIDTH.value
  c.method = _METHOD.value
  c.secagg.enabled = True
  c.secagg.protocol = "secagg+"
  c.secagg.simulate = _SIMULATE.value
  c.scale.chunk_clients = _CHUNK.value
  return c


def run_one(cohort: int, out: str) -> None:
  from clipjax import experiment
  with tempfile.TemporaryDirectory() as workdir:
    tick = time.perf_counter()
    experiment.run(config_for(cohort), workdir)
    wall = time.perf_counter() - tick
    rows = [json.loads(x) for x in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((pathlib.Path(workdir) / "summary.json").read_text())
  last = rows[-1]
  peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  pathlib.Path(out).write_text(json.dumps({
      "cohort": cohort, "host_s_last_round": last["host_seconds"],
      "host_s_train": last.get("host_seconds_train"),
      "host_s_masking": last.get("host_seconds_sum"),
      "host_s_secagg": last.get("host_seconds_secagg"), "peak_rss_gb": peak_kib / 2**20,
      "degree": summary["secagg_parameters"]["degree"],
      "wall_s": wall, "stragglers": len(last["stragglers"]),
      "aborted": "aborted" in last, "secagg_survivors": last.get("secagg_survivors")}))


def main(argv):
  del argv
  if _ONE.value:
    try:
      run_one(_ONE.value, _OUT.value)
    except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
      sys.exit(f"error: {e}")
    return
  results = []
  for cohort in (int(c) for c in _COHORTS.value):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
      cmd = [sys.executable, __file__, f"--one={cohort}", f"--out={f.name}",
             f"--population={_POPULATION.value}", f"--chunk={_CHUNK.value}",
             f"--width={_WIDTH.value}", f"--rounds={_ROUNDS.value}", f"--method={_METHOD.value}",
             f"--simulate={_SIMULATE.value}"]
      env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
      if subprocess.run(cmd, env=env).returncode:
        sys.exit(f"error: the C = {cohort} run failed (its message is above)")
      results.append(json.loads(pathlib.Path(f.name).read_text()))
  import jax
  print(f"\nVGG-9 width {_WIDTH.value}, CIFAR-10 {_POPULATION.value} IID partitions, "
        f"{_METHOD.value}, SecAgg+ (simulate={_SIMULATE.value}), chunk {_CHUNK.value}, "
        f"round {_ROUNDS.value} of each run; "
        f"{jax.default_backend()}, {os.cpu_count()} cores, {platform.processor() or '?'}\n")
  print("| C | SecAgg+ k | host s / round | train s | masking s | unmasking s | other s | "
        "ms per client | ms per client-stream (1 + k) | peak RSS (GB) |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in results:
    parts = [r["host_s_train"], r["host_s_masking"] or 0.0, r["host_s_secagg"] or 0.0]
    other = r["host_s_last_round"] - sum(parts)
    per = 1e3 * r["host_s_last_round"] / r["cohort"]
    print(f"| {r['cohort']} | {r['degree']} | {r['host_s_last_round']:.1f} | {parts[0]:.1f} | "
          f"{parts[1]:.1f} | {parts[2]:.1f} | {other:.1f} | {per:.0f} | "
          f"{per / (1 + r['degree']):.1f} | {r['peak_rss_gb']:.2f} |")
  print(json.dumps({"bench": "scale", "width": _WIDTH.value, "chunk": _CHUNK.value,
                    "simulate": _SIMULATE.value,
                    "population": _POPULATION.value, "backend": jax.default_backend(),
                    "results": results}))


if __name__ == "__main__":
  _cli.run(main)
