"""Measures a device's sustained training throughput (FLOP/s) for the virtual clock.

Trains one real client of the model's dataset (leaf_cnn: FEMNIST, vgg9: CIFAR-10, leaf_lstm:
Shakespeare) with the experiments' local-training loop on ONE CPU thread and divides the
analytic training FLOPs (`clipjax.models.flops.train_flops`, checked against XLA's cost
analysis in the tests) by the measured seconds. The result is a grounded value for the fast
tier (the paper's fast tier is a 3 GHz CPU; the slow one is `devices.slow_compute_ratio` of
it). `--save` stores it where `--config.devices.calibration=measured` finds it
(`clipjax.clock.calibration`), for runs of the same model and width.

  python scripts/measure_device.py --model=leaf_cnn --width=1.0 --repeats=5
  python scripts/measure_device.py --model=leaf_cnn --width=0.25 --save

Prints a table and one JSON line.
"""

import os

# One intra-op thread: a client device is one CPU core, as in the paper's setting.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import _cli  # noqa: E402
from absl import flags  # noqa: E402

from clipjax.reporting import summary as summary_lib  # noqa: E402
from clipjax.clock import calibration  # noqa: E402
from clipjax.data import example_batch, load_federated  # noqa: E402
from clipjax.fl import local, training  # noqa: E402
from clipjax.models import flops, get_model  # noqa: E402

_DATASETS = {"leaf_cnn": "femnist", "vgg9": "cifar10", "leaf_lstm": "shakespeare"}
_MODEL = flags.DEFINE_enum("model", "leaf_cnn", list(_DATASETS), "Model (and so its dataset).")
_WIDTH = flags.DEFINE_float("width", 1.0, "Width multiplier.")
_BATCH = flags.DEFINE_integer("batch_size", 10, "Local batch size.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions (the median is reported).")
_CLIENT = flags.DEFINE_integer("client", 0, "Which of the seed-0 clients to train.")
_SAVE = flags.DEFINE_bool("save", False, "Store the result for devices.calibration=measured.")


def main(argv):
  del argv
  try:
    data = load_federated(_DATASETS[_MODEL.value], num_clients=20, seed=0)
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")
  model = get_model(_MODEL.value, num_classes=data.num_classes, width=_WIDTH.value)
  params = model.init(jax.random.key(0))
  c = _CLIENT.value
  n = int(data.train.num_examples[c])
  x, y, valid = (jnp.asarray(a[c:c + 1]) for a in (data.train.x, data.train.y, data.train.valid))
  kind, seq_len = data.kind, data.seq_len or 80
  train = training.make_trainer(  # the loop the experiments use on this backend
      model.apply, lambda xc, yc, idx: example_batch(kind, xc, yc, idx, seq_len=seq_len),
      optax.sgd(0.05),
      local.LocalSpec(epochs=1, batch_size=_BATCH.value), client_batch=1)
  update = lambda p, xc, yc, v, k: train(p, xc, yc, v, k).delta  # noqa: E731
  key = jax.random.key(1)[None]
  jax.block_until_ready(update(params, x, y, valid, key))  # compile
  seconds = []
  for _ in range(_REPEATS.value):
    t = time.perf_counter()
    jax.block_until_ready(update(params, x, y, valid, key))
    seconds.append(time.perf_counter() - t)
  work = flops.train_flops(model, None, n, 1)
  rate = work / float(np.median(seconds))
  print(summary_lib.markdown_table(
      ["model", "width", "examples", "train GFLOP", "median s", "GFLOP/s (1 thread)"],
      [(model.name, _WIDTH.value, n, work / 1e9, float(np.median(seconds)), rate / 1e9)]))
  record = {"bench": "device", "model": model.name, "width": _WIDTH.value, "examples": n,
            "train_flops": work, "seconds": seconds, "flops_per_s": rate,
            "backend": jax.default_backend(), "device": str(jax.devices()[0]),
            "cpu": platform.processor() or platform.machine(),
            "measured": time.strftime("%Y-%m-%d")}
  print(json.dumps(record))
  if _SAVE.value:
    print(f"saved for devices.calibration=measured: "
          f"{calibration.save_measurement(model.name, _WIDTH.value, record)}")


if __name__ == "__main__":
  _cli.run(main)
