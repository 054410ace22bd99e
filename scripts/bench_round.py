"""Samples/s of the vmapped round vs a Python loop over the same jitted one-client function.

Both sides train the same clients (real FEMNIST writers, LEAF CNN) from the same global
parameters with the same keys, measured in the same process, alternating repetitions.

  python scripts/bench_round.py --clients=20 --width=1.0 --repeats=3

Prints a table and one JSON line.
"""

import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

from clipjax import report  # noqa: E402
from clipjax.data import example_batch, load_federated  # noqa: E402
from clipjax.fl import local  # noqa: E402
from clipjax.fl import round as round_lib  # noqa: E402
from clipjax.models import get_model  # noqa: E402

_CLIENTS = flags.DEFINE_integer("clients", 20, "Number of FEMNIST writers C.")
_WIDTH = flags.DEFINE_float("width", 1.0, "LEAF CNN width multiplier.")
_BATCH = flags.DEFINE_integer("batch_size", 10, "Local batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repetitions of each side.")


def main(argv):
  del argv
  data = load_federated("femnist", num_clients=_CLIENTS.value, seed=0)
  model = get_model("leaf_cnn", num_classes=data.num_classes, width=_WIDTH.value)
  params = model.init(jax.random.key(0))
  batch_fn = lambda x, y, idx: example_batch("images", x, y, idx)  # noqa: E731
  update = local.make_client_update(model.apply, batch_fn, optax.sgd(0.05),
                                    local.LocalSpec(epochs=1, batch_size=_BATCH.value))
  x, y, valid = (jnp.asarray(a) for a in (data.train.x, data.train.y, data.train.valid))
  keys = round_lib.client_keys(jax.random.key(1), jnp.int32(0), jnp.arange(x.shape[0]))
  vmapped = jax.jit(lambda p, *a: round_lib.train_clients(update, p, *a).delta)
  chunked = jax.jit(lambda p, *a: round_lib.train_clients(update, p, *a, client_batch=4).delta)
  one = jax.jit(lambda p, *a: update(p, *a).delta)
  examples = int(np.sum(data.train.num_examples))

  def run_vmapped():
    jax.block_until_ready(vmapped(params, x, y, valid, keys))

  def run_chunked():
    jax.block_until_ready(chunked(params, x, y, valid, keys))

  def run_loop():  # each client with its own padded-to-its-size data: no padding waste
    outs = []
    for c in range(x.shape[0]):
      n = int(data.train.num_examples[c])
      outs.append(one(params, x[c, :n], y[c, :n], valid[c, :n], keys[c]))
    jax.block_until_ready(outs)

  def run_loop_padded():  # same padded shapes as the vmapped round: compiles once
    jax.block_until_ready([one(params, x[c], y[c], valid[c], keys[c]) for c in range(x.shape[0])])

  sides = {"vmapped round": run_vmapped, "chunked round (lax.map, 4 clients/chunk)": run_chunked,
           "python loop (padded, one compile)": run_loop_padded,
           "python loop (unpadded, per-size compiles)": run_loop}
  compile_s, best = {}, {}
  for name, fn in sides.items():
    t = time.perf_counter()
    fn()
    compile_s[name] = time.perf_counter() - t
  for _ in range(_REPEATS.value):
    for name, fn in sides.items():
      t = time.perf_counter()
      fn()
      best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
  base = examples / best["vmapped round"]
  rows = [(name, compile_s[name], best[name], examples / best[name], (examples / best[name]) / base)
          for name in sides]
  print(report.markdown_table(["side", "first call s", "best s", "samples/s", "vs vmapped"], rows))
  print(json.dumps({"bench": "round", "clients": int(x.shape[0]), "width": _WIDTH.value,
                    "examples": examples, "backend": jax.default_backend(),
                    **{f"samples_per_s[{n}]": examples / best[n] for n in sides}}))


if __name__ == "__main__":
  app.run(main)
