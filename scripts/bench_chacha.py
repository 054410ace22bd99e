"""ChaCha20 keystream: jitted clipjax.secagg.chacha.keystream vs pycryptodome (single thread).

  python scripts/bench_chacha.py            # host C path, jax.numpy under default and fast flags
  python scripts/bench_chacha.py --modes=fast --repeats=7

Modes: `host` is `impl="host"` (pycryptodome's C keystream through jax.pure_callback, one
thread per core: the CPU default); `default` and `fast` are `impl="xla"` (jax.numpy) under
default XLA flags and under `chacha.FAST_XLA_FLAGS`.

Each mode runs in its own subprocess because XLA_FLAGS is read once, when JAX starts its CPU
backend. Within a subprocess jax and pycryptodome are timed alternately on the same machine
(best of --repeats each) and the ratio jax/pycryptodome is printed. pycryptodome is its
single-threaded C implementation; jax runs with XLA's default CPU thread pool.
"""

import functools
import json
import os
import subprocess
import sys
import time

import _cli
from absl import flags

_MODES = flags.DEFINE_list("modes", ["host", "default", "fast"],
                           "'host' (C keystream), 'default' and/or 'fast' XLA flags (jax.numpy)")
_WORDS = flags.DEFINE_integer("words", 1 << 24, "keystream words in total (4 bytes each)")
_STREAMS = flags.DEFINE_integer("streams", 64, "independent (key, nonce) streams")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed repetitions of each, interleaved")
_CHILD = flags.DEFINE_string("child", "", "internal: run one mode in this process")


def measure_keystream(words: int, streams: int, repeats: int, impl: str) -> dict:
  """Checks the jitted keystream against pycryptodome, then times both alternately."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from Crypto.Cipher import ChaCha20  # pylint: disable=g-import-not-at-top
  from clipjax.secagg import chacha  # pylint: disable=g-import-not-at-top

  per = words // streams // 16 * 16
  rng = np.random.default_rng(0)
  keys = rng.integers(0, 2**32, (streams, 8), dtype=np.uint32)
  nonces = np.zeros((streams, 3), np.uint32)
  fn = jax.jit(functools.partial(chacha.keystream, impl=impl), static_argnames=("num_words",))
  out = np.asarray(fn(keys, nonces, 0, num_words=per))
  ref = ChaCha20.new(key=keys[0].astype("<u4").tobytes(), nonce=bytes(12)).encrypt(bytes(4 * per))
  assert out[0].astype("<u4").tobytes() == ref, "keystream differs from pycryptodome"
  zeros = bytes(4 * per * streams)
  best_j = best_p = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn(keys, nonces, 0, num_words=per).block_until_ready()
    best_j = min(best_j, time.perf_counter() - start)
    cipher = ChaCha20.new(key=bytes(32), nonce=bytes(12))
    start = time.perf_counter()
    cipher.encrypt(zeros)
    best_p = min(best_p, time.perf_counter() - start)
  size = 4 * per * streams
  return dict(jax_gbps=size / best_j / 1e9, pycryptodome_gbps=size / best_p / 1e9,
              ratio=best_p / best_j, impl=impl,
              layout="stream" if chacha.small_loops_hoisted() else "flat",
              xla_flags=os.environ.get("XLA_FLAGS", ""), bytes=size)


def main(argv):
  del argv
  if _CHILD.value:
    impl = "host" if _CHILD.value == "host" else "xla"
    print(json.dumps(measure_keystream(_WORDS.value, _STREAMS.value, _REPEATS.value, impl)))
    return
  from clipjax.secagg import chacha  # pylint: disable=g-import-not-at-top
  for mode in _MODES.value:
    env = dict(os.environ)
    if mode == "fast":
      env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), *chacha.FAST_XLA_FLAGS]).strip()
    elif mode not in ("default", "host"):
      raise ValueError(f"unknown mode {mode!r}")
    cmd = [sys.executable, __file__, f"--child={mode}", f"--words={_WORDS.value}",
           f"--streams={_STREAMS.value}", f"--repeats={_REPEATS.value}"]
    res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                    text=True).stdout.strip().splitlines()[-1])
    print(f"keystream [{mode}: impl={res['impl']}, layout={res['layout']}, "
          f"XLA_FLAGS='{res['xla_flags']}']: "
          f"jax {res['jax_gbps']:.3f} GB/s, pycryptodome (1 thread) "
          f"{res['pycryptodome_gbps']:.3f} GB/s, ratio {res['ratio']:.2f}", flush=True)
    print(json.dumps(dict(mode=mode, **res)), flush=True)


if __name__ == "__main__":
  _cli.run(main)
