"""Benchmark of clipjax.secagg: seconds per stage and ChaCha20 keystream GB/s vs pycryptodome.

Full grid (n in {10, 50, 200}, D in {1e5, 1e6}, SecAgg and SecAgg+):
  python scripts/bench_secagg.py
Smaller grid:
  python scripts/bench_secagg.py --clients=10,50 --dims=100000 --protocols=secagg+
Keystream line only (faster; see also scripts/bench_chacha.py, which also runs the opt-in
chacha.FAST_XLA_FLAGS in a subprocess):
  python scripts/bench_secagg.py --keystream_only
  XLA_FLAGS="$(python -c 'from clipjax.secagg import chacha; print(*chacha.FAST_XLA_FLAGS)')" \
      python scripts/bench_secagg.py --keystream_only
Prints a table and one JSON line.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags

from clipjax import secagg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_chacha  # noqa: E402  (the keystream race lives there once)
from clipjax.secagg import chacha

_CLIENTS = flags.DEFINE_list("clients", ["10", "50", "200"], "numbers of clients n")
_DIMS = flags.DEFINE_list("dims", ["100000", "1000000"], "update sizes D")
_PROTOCOLS = flags.DEFINE_list("protocols", ["secagg", "secagg+"], "protocols")
_DROP = flags.DEFINE_float("dropout_rate", 0.1, "drop-out rate")
_KS_WORDS = flags.DEFINE_integer("keystream_words", 1 << 24, "words for the keystream benchmark")
_KS_ONLY = flags.DEFINE_bool("keystream_only", False, "only the keystream benchmark")


def keystream_rates(words: int) -> tuple[float, float]:
  """(jitted jax GB/s, pycryptodome GB/s), best of 3 each, interleaved (see bench_chacha.py)."""
  res = bench_chacha.measure_keystream(words, streams=64, repeats=3)
  return res["jax_gbps"], res["pycryptodome_gbps"]


def main(argv):
  del argv
  jax_gbs, ref_gbs = keystream_rates(_KS_WORDS.value)
  rows = []
  for protocol in [] if _KS_ONLY.value else _PROTOCOLS.value:
    for n in map(int, _CLIENTS.value):
      for dim in map(int, _DIMS.value):
        x = np.random.default_rng(n).uniform(-0.5, 0.5, (n, dim)).astype(np.float32)
        res = secagg.secure_sum(x, protocol=protocol, seed=1, keep_transcript_inputs=False,
                                dropouts=secagg.Dropouts(rate=_DROP.value))
        s = res.stats.seconds
        host = (s["advertise_keys"] + s["share_keys"] + s["masked_input_host"]
                + s["unmasking_host"])
        err = float(np.abs(np.asarray(res.mean) - x[res.survivors].mean(0)).max())
        rows.append(dict(protocol=protocol, n=n, dim=dim, survivors=int(res.survivors.sum()),
                         host_crypto_s=host, masking_s=s["masked_input_device"],
                         server_sum_s=s["server_sum"], unmasking_s=s["unmasking_device"],
                         total_s=s["total"], max_abs_err=err))
        r = rows[-1]
        print(f"{protocol:8s} n={n:4d} D={dim:8d} surv={r['survivors']:4d} "
              f"host={r['host_crypto_s']:8.2f}s mask={r['masking_s']:8.2f}s "
              f"sum={r['server_sum_s']:6.2f}s unmask={r['unmasking_s']:7.2f}s "
              f"total={r['total_s']:8.2f}s err={err:.1e}", flush=True)
  layout = "stream" if chacha.small_loops_hoisted() else "flat"
  print(f"keystream [layout={layout}, XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}']: "
        f"jax {jax_gbs:.3f} GB/s, pycryptodome (1 thread) {ref_gbs:.3f} GB/s, "
        f"ratio {jax_gbs / ref_gbs:.2f}")
  print(json.dumps(dict(keystream_jax_gbps=jax_gbs, keystream_pycryptodome_gbps=ref_gbs,
                        keystream_layout=layout,
                        rows=rows)))


if __name__ == "__main__":
  app.run(main)
