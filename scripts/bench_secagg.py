"""Benchmark of clipjax.secagg: seconds per stage, the full SecAgg+ round, ChaCha20 GB/s, Flower.

Full grid (n in {10, 50, 200}, D in {1e5, 1e6}, SecAgg and SecAgg+), then the acceptance round:
  python scripts/bench_secagg.py
Smaller grid:
  python scripts/bench_secagg.py --clients=10,50 --dims=100000 --protocols=secagg+
Only the acceptance round (secure_sum, n = 50, D = 1e6, SecAgg+, 10% drop-outs, checked exact
against the plain mod-2^32 sum) beside per-client keystream figures and Flower's SecAgg+ client:
  python scripts/bench_secagg.py --protocols= --round_only
Flower (``pip install -e '.[bench]'``): its own functions (quantize, pseudo_rand_gen, ECDH
key agreement) mask one client's vector for the same n, D and k, as ``secaggplus_mod`` does. If
flwr lives in another virtualenv (it pins older pycryptodome/protobuf), point at its python:
  python scripts/bench_secagg.py --protocols= --round_only --flower_python=/path/to/bin/python
Keystream line only (see also scripts/bench_chacha.py, which also runs the opt-in
chacha.FAST_XLA_FLAGS in a subprocess):
  python scripts/bench_secagg.py --keystream_only
Prints a table and one JSON line.
"""

import inspect
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from clipjax import secagg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402
import bench_chacha  # noqa: E402  (the keystream race lives there once)
from clipjax.secagg import aggregate, blinding, chacha, quantize  # noqa: E402

_CLIENTS = flags.DEFINE_list("clients", ["10", "50", "200"], "numbers of clients n")
_DIMS = flags.DEFINE_list("dims", ["100000", "1000000"], "update sizes D")
_PROTOCOLS = flags.DEFINE_list("protocols", ["secagg", "secagg+"], "protocols")
_DROP = flags.DEFINE_float("dropout_rate", 0.1, "drop-out rate")
_KS_WORDS = flags.DEFINE_integer("keystream_words", 1 << 24, "words for the keystream benchmark")
_KS_ONLY = flags.DEFINE_bool("keystream_only", False, "only the keystream benchmark")
_ROUND = flags.DEFINE_bool("round", True, "the acceptance round: n=50, D=1e6, SecAgg+")
_ROUND_ONLY = flags.DEFINE_bool("round_only", False, "skip the grid (same as --protocols=)")
_ROUND_N = flags.DEFINE_integer("round_clients", 50, "n of the acceptance round")
_ROUND_D = flags.DEFINE_integer("round_dim", 1_000_000, "D of the acceptance round")
_FLOWER_PY = flags.DEFINE_string("flower_python", "", "python with flwr installed (default: "
                                 "this one, if it can import flwr)")
_FLOWER_REPEATS = flags.DEFINE_integer("flower_repeats", 2, "timed Flower client maskings")


def keystream_rates(words: int) -> tuple[float, float]:
  """(jitted jax GB/s, pycryptodome GB/s), best of 3 each, interleaved (see bench_chacha.py)."""
  res = bench_chacha.measure_keystream(words, streams=64, repeats=3, impl=chacha.default_impl())
  return res["jax_gbps"], res["pycryptodome_gbps"]


def flower_client_masking(dim: int, degree: int, repeats: int) -> dict:
  """Seconds for one Flower SecAgg+ client to quantise and mask a D-vector for k neighbours.

  The steps of ``flwr.client.mod.secure_aggregation.secaggplus_mod._collect_masked_vectors``
  with Flower's default ranges (clip 8, quantisation 2^22, modulus 2^32): weight scaling,
  stochastic quantisation, the private mask and one ECDH + HKDF key agreement and pairwise mask
  per neighbour, all from flwr's own functions. Self-contained: it runs in another interpreter.
  """
  import time as _time  # pylint: disable=reimported,g-import-not-at-top
  import numpy as _np  # pylint: disable=g-import-not-at-top
  import flwr  # pylint: disable=g-import-not-at-top
  from flwr.common.secure_aggregation import ndarrays_arithmetic as ar
  from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
  from flwr.common.secure_aggregation.quantization import quantize as f_quantize
  from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
  from flwr.supercore.primitives.asymmetric import generate_key_pairs

  clip, target, modulus, max_weight = 8.0, 1 << 22, 1 << 32, 1000.0
  update = [_np.random.default_rng(0).uniform(-0.5, 0.5, dim)]
  own_sk, _ = generate_key_pairs()
  peers = [generate_key_pairs()[1] for _ in range(degree)]
  best = float("inf")
  for _ in range(repeats):
    start = _time.perf_counter()
    q_ratio = round(100.0 / max_weight * target)
    params = ar.parameters_multiply(update, q_ratio / target)
    quantized = ar.factor_combine(q_ratio, f_quantize(params, clip, target))
    dims = [a.shape for a in quantized]
    quantized = ar.parameters_addition(quantized, pseudo_rand_gen(bytes(32), modulus, dims))
    for i, pk in enumerate(peers):
      mask = pseudo_rand_gen(generate_shared_key(own_sk, pk), modulus, dims)
      op = ar.parameters_addition if i % 2 else ar.parameters_subtraction
      quantized = op(quantized, mask)
    quantized = ar.parameters_mod(quantized, modulus)
    best = min(best, _time.perf_counter() - start)
  return {"flwr_version": flwr.__version__, "seconds": best, "dim": dim, "degree": degree}


def flower_masking(dim: int, degree: int, repeats: int) -> dict | None:
  """Runs :func:`flower_client_masking` here or in ``--flower_python``; None without flwr."""
  python = _FLOWER_PY.value
  if not python:
    try:
      import flwr  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      return None
    return flower_client_masking(dim, degree, repeats)
  code = (inspect.getsource(flower_client_masking) + "\nimport json\n"
          f"print(json.dumps(flower_client_masking({dim}, {degree}, {repeats})))\n")
  out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def acceptance_round(n: int, dim: int, drop: float, jax_gbs: float, ref_gbs: float) -> dict:
  """secure_sum n x D SecAgg+ with drop-outs: wall time (cold and warm) and exactness."""
  x = np.random.default_rng(0).uniform(-0.2, 0.2, size=(n, dim)).astype(np.float32)
  w = np.random.default_rng(1).integers(10, 500, n).astype(np.float64)
  walls = []
  for _ in range(2):  # the first call compiles
    start = time.perf_counter()
    res = secagg.secure_sum(x, w, max_weight=500.0, protocol="secagg+",
                            dropouts=secagg.Dropouts(rate=drop), seed=11,
                            keep_transcript_inputs=False)
    walls.append(time.perf_counter() - start)
  codes, _ = aggregate.weight_codes(w, n, 16, 500.0)
  hi, lo = quantize.scale_pair(codes, 1.0)
  q = np.asarray(blinding.encode_inputs(
      jnp.asarray(x), jnp.asarray(hi), jnp.asarray(lo), jnp.asarray(codes),
      aggregate.noise_keys(jax.random.key(11), n), clip=1.0, bits=16))
  plain = (q[res.survivors].astype(np.uint64).sum(axis=0) % 2**32).astype(np.uint32)
  exact = bool(np.array_equal(res.encoded_sum, plain))
  k, survivors = res.setup.degree, int(res.survivors.sum())
  words = (k + 1) * (dim + 1)  # one client: its self mask and k pairwise streams
  s = res.stats.seconds
  return dict(n=n, dim=dim, degree=k, threshold=res.setup.threshold,
              p_leak=res.setup.params.p_leak, p_split=res.setup.params.p_split,
              p_abort=res.setup.params.p_abort, survivors=survivors, exact=exact,
              wall_cold_s=walls[0], wall_s=walls[1], masking_s=s["masked_input_device"],
              masking_per_client_s=s["masked_input_device"] / survivors,
              keystream_per_client_jax_s=4 * words / (jax_gbs * 1e9),
              keystream_per_client_pycryptodome_s=4 * words / (ref_gbs * 1e9))


def main(argv):
  del argv
  jax_gbs, ref_gbs = keystream_rates(_KS_WORDS.value)
  rows = []
  grid = [] if (_KS_ONLY.value or _ROUND_ONLY.value) else _PROTOCOLS.value
  for protocol in grid:
    for n in map(int, _CLIENTS.value):
      for dim in map(int, _DIMS.value):
        x = np.random.default_rng(n).uniform(-0.5, 0.5, (n, dim)).astype(np.float32)
        try:
          res = secagg.secure_sum(x, protocol=protocol, seed=1, keep_transcript_inputs=False,
                                  dropouts=secagg.Dropouts(rate=_DROP.value))
        except secagg.RoundAborted as e:  # more drop-outs than the parameters were chosen for
          print(f"{protocol:8s} n={n:4d} D={dim:8d} {e}", flush=True)
          continue
        s = res.stats.seconds
        host = (s["advertise_keys"] + s["share_keys"] + s["masked_input_host"]
                + s["unmasking_host"])
        err = float(np.abs(np.asarray(res.mean) - x[res.survivors].mean(0)).max())
        rows.append(dict(protocol=protocol, n=n, dim=dim, degree=res.setup.degree,
                         threshold=res.setup.threshold, survivors=int(res.survivors.sum()),
                         host_crypto_s=host, masking_s=s["masked_input_device"],
                         server_sum_s=s["server_sum"], unmasking_s=s["unmasking_device"],
                         total_s=s["total"], max_abs_err=err))
        r = rows[-1]
        print(f"{protocol:8s} n={n:4d} D={dim:8d} k={r['degree']:3d} t={r['threshold']:3d} "
              f"surv={r['survivors']:4d} host={r['host_crypto_s']:8.2f}s "
              f"mask={r['masking_s']:8.2f}s sum={r['server_sum_s']:6.2f}s "
              f"unmask={r['unmasking_s']:7.2f}s total={r['total_s']:8.2f}s err={err:.1e}",
              flush=True)
  layout = "stream" if chacha.small_loops_hoisted() else "flat"
  impl = chacha.default_impl()
  print(f"keystream [impl={impl}, layout={layout}, XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}"
        f"', {len(os.sched_getaffinity(0))} core(s)]: jitted keystream {jax_gbs:.3f} GB/s, "
        f"pycryptodome (1 thread) {ref_gbs:.3f} GB/s, ratio {jax_gbs / ref_gbs:.2f}")
  round_row = flower = None
  if _ROUND.value and not _KS_ONLY.value:
    round_row = acceptance_round(_ROUND_N.value, _ROUND_D.value, _DROP.value, jax_gbs, ref_gbs)
    r = round_row
    print(f"secure_sum secagg+ n={r['n']} D={r['dim']} k={r['degree']} t={r['threshold']} "
          f"drop-outs {_DROP.value:.0%}: {r['survivors']} survivors, exact={r['exact']}, "
          f"wall {r['wall_s']:.2f} s ({r['wall_cold_s']:.2f} s with compilation); masking "
          f"{r['masking_s']:.2f} s for all = {r['masking_per_client_s']:.3f} s per client")
    print(f"  per client, {r['degree'] + 1} streams x {r['dim'] + 1} words: keystream alone "
          f"{r['keystream_per_client_jax_s']:.3f} s (jax) / "
          f"{r['keystream_per_client_pycryptodome_s']:.3f} s (pycryptodome)")
    flower = flower_masking(r["dim"], r["degree"], _FLOWER_REPEATS.value)
    if flower is None:
      print("  Flower: flwr not importable (pip install -e '.[bench]' or --flower_python)")
    else:
      print(f"  Flower {flower['flwr_version']} SecAgg+ client masking (numpy, same D and k): "
            f"{flower['seconds']:.3f} s per client")
      r["ratio_masking_per_client_vs_flower"] = r["masking_per_client_s"] / flower["seconds"]
      r["ratio_protocol_vs_flower_masking"] = r["wall_s"] / (flower["seconds"] * r["n"])
      print(f"  clipjax / Flower: masking per client {r['ratio_masking_per_client_vs_flower']:.2f}x"
            f"; the whole protocol (warm) against Flower's masking of all {r['n']} clients "
            f"({flower['seconds'] * r['n']:.2f} s): {r['ratio_protocol_vs_flower_masking']:.2f}x")
  print(json.dumps(dict(keystream_jax_gbps=jax_gbs, keystream_pycryptodome_gbps=ref_gbs,
                        keystream_impl=impl, keystream_layout=layout,
                        cores=len(os.sched_getaffinity(0)), rows=rows, round=round_row,
                        flower=flower)))


if __name__ == "__main__":
  _cli.run(main)
