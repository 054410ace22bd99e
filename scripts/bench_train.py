"""Local-training speed of clipjax against PyTorch, side by side in one process.

For each model (VGG-9 on 32x32x3 images, LEAF CNN on 28x28x1, LEAF LSTM on 80-symbol text; the
configs' batch sizes 32, 10, 10), every side trains the same number of examples per client for
one local epoch of SGD from the same architecture:

  (a) clipjax round: `clipjax.fl.training.make_trainer` over C clients (its default loop and
      chunk for this backend, and each `--chunks` size), one call = one round's local training;
  (b) clipjax one client: the same trainer with C = 1;
  (c) PyTorch one client: a plain `torch.nn` loop over the same batches;
  (d) PyTorch client loop: C clients one by one, each loading the global weights, training and
      returning its delta (what Flower, FedML and FLUTE simulations do);
  (e) clipjax's device-side scan (the GPU/TPU loop, and the CPU default before the host loop).

Inputs are random arrays of the real shapes (speed does not depend on the values); every
side is compiled or warmed up once, then timed `--repeats` times in turn (best time kept).

  python scripts/bench_train.py                      # all models, C = 10 and 20
  python scripts/bench_train.py --models=leaf_cnn --clients=10 --chunks=1,2,4

Prints a Markdown table and one JSON line (`ratio_round_vs_torch_loop[<model>]`,
`ratio_client_vs_torch[<model>]`, samples/s of every side). PyTorch comes from the optional
`bench` extra: `pip install -e '.[bench]'`.
"""

import dataclasses
import json
import os
import pathlib
import platform
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import _cli  # noqa: E402
from absl import flags  # noqa: E402

from clipjax.reporting import summary as summary_lib  # noqa: E402
from clipjax.data import example_batch  # noqa: E402
from clipjax.fl import local, training  # noqa: E402
from clipjax.fl import clients as round_lib  # noqa: E402
from clipjax.models import get_model, scale_width  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["vgg9", "leaf_cnn", "leaf_lstm"], "Models to measure.")
_CLIENTS = flags.DEFINE_list("clients", ["10", "20"], "Round sizes C.")
_CHUNKS = flags.DEFINE_list("chunks", [], "Extra clipjax chunk sizes (client_batch) to time "
                            "at the first C, besides the default.")
_STREAMS = flags.DEFINE_list("streams", [], "Extra numbers of client chunks in flight at once "
                             "(host loop) to time at the first C.")
_WIDTH = flags.DEFINE_float("width", 1.0, "Width multiplier of every model.")
_EXAMPLES = flags.DEFINE_integer("examples", 0, "Examples per client (0: 3 batches' worth).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed repetitions of each side (best kept).")
_SCAN = flags.DEFINE_bool("scan", True, "Also time clipjax's device-side scan on one client.")
_LSTM_UNROLL = flags.DEFINE_list("lstm_unroll", [], "Extra LSTM time-scan unroll factors to "
                                 "time on one client (the model's default is 1).")
_LR = 0.01

# model -> (batch size of its config, data kind, per-example input shape)
SETTINGS = {"vgg9": (32, "images", (32, 32, 3)), "leaf_cnn": (10, "images", (28, 28, 1)),
            "leaf_lstm": (10, "text", (80,))}


def _torch_model(name: str, width: float, num_classes: int):
  import torch.nn as tnn  # pylint: disable=import-outside-toplevel
  s = lambda n: scale_width(n, width)  # noqa: E731
  if name == "vgg9":
    chans = [3] + [s(n) for n in (32, 64, 128, 128, 256, 256)]
    layers = []
    for i in range(6):
      layers += [tnn.Conv2d(chans[i], chans[i + 1], 3, padding=1), tnn.ReLU()]
      if i % 2 == 1:
        layers.append(tnn.MaxPool2d(2))
    return tnn.Sequential(*layers, tnn.Flatten(), tnn.Linear(chans[-1] * 16, s(512)), tnn.ReLU(),
                          tnn.Linear(s(512), s(512)), tnn.ReLU(), tnn.Linear(s(512), num_classes))
  if name == "leaf_cnn":
    c0, c1, d0 = s(32), s(64), s(2048)
    return tnn.Sequential(tnn.Conv2d(1, c0, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                          tnn.Conv2d(c0, c1, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                          tnn.Flatten(), tnn.Linear(c1 * 49, d0), tnn.ReLU(),
                          tnn.Linear(d0, num_classes))

  class LeafLSTM(tnn.Module):

    def __init__(self):
      super().__init__()
      self.embed = tnn.Embedding(80, 8)
      self.lstm = tnn.LSTM(8, s(256), num_layers=2, batch_first=True)
      self.logits = tnn.Linear(s(256), num_classes)

    def forward(self, tokens):
      out, _ = self.lstm(self.embed(tokens))
      return self.logits(out[:, -1])

  return LeafLSTM()


class TorchClients:
  """PyTorch local training of one client, and of C clients one by one from a global model."""

  def __init__(self, name, width, num_classes, kind, batch):
    import torch  # pylint: disable=import-outside-toplevel
    self.torch, self.kind, self.batch = torch, kind, batch
    torch.manual_seed(0)
    self.model = _torch_model(name, width, num_classes)
    self.global_state = {k: v.clone() for k, v in self.model.state_dict().items()}

  def _batches(self, x, y, n):
    torch = self.torch
    order = torch.randperm(n)
    for start in range(0, n, self.batch):
      idx = order[start:start + self.batch]
      if self.kind == "images":
        yield x[idx].permute(0, 3, 1, 2).float().div_(255.0), y[idx]
      else:
        offsets = torch.arange(80)
        yield x[idx[:, None] + offsets[None, :]].long(), x[idx + 80].long()

  def train_client(self, x, y, n):
    torch = self.torch
    self.model.load_state_dict(self.global_state)
    opt = torch.optim.SGD(self.model.parameters(), lr=_LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    for inputs, labels in self._batches(x, y, n):
      opt.zero_grad(set_to_none=True)
      loss_fn(self.model(inputs), labels).backward()
      opt.step()
    with torch.no_grad():
      return {k: v - self.global_state[k] for k, v in self.model.state_dict().items()}


def _data(kind, shape, num_classes, clients, n, rng):
  if kind == "images":
    x = rng.integers(0, 256, (clients, n, *shape), dtype=np.uint8)
    y = rng.integers(0, num_classes, (clients, n)).astype(np.int32)
  else:
    x = rng.integers(0, num_classes, (clients, n + 80), dtype=np.uint8)
    y = np.zeros((clients, 0), np.int32)
  return x, y, np.ones((clients, n), bool)


def _time(fn, repeats):
  fn()  # compile / warm up
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def bench_model(name, clients, chunks, width, n, repeats, with_scan, lstm_unroll=()):
  import torch  # pylint: disable=import-outside-toplevel
  batch, kind, shape = SETTINGS[name]
  n = n or 3 * batch
  model = get_model(name, width=width)
  params = model.init(jax.random.key(0))
  spec = local.LocalSpec(epochs=1, batch_size=batch)
  bf = lambda xc, yc, idx: example_batch(kind, xc, yc, idx)  # noqa: E731
  rng = np.random.default_rng(0)
  xs, ys, vs = _data(kind, shape, model.num_classes, max(clients), n, rng)
  torch_clients = TorchClients(name, width, model.num_classes, kind, batch)
  tx, ty = torch.from_numpy(xs), torch.from_numpy(ys.astype(np.int64))
  loop = training.default_loop()
  default_chunk = training.default_client_batch(name)

  def clipjax_side(num, chunk, loop_name=loop, apply_fn=model.apply, streams=1):
    train = training.make_trainer(apply_fn, bf, optax.sgd(_LR), spec, loop=loop_name,
                                  client_batch=chunk, streams=streams)
    x, y, v = jnp.asarray(xs[:num]), jnp.asarray(ys[:num]), jnp.asarray(vs[:num])
    keys = round_lib.client_keys(jax.random.key(1), jnp.int32(0), jnp.arange(num))
    return lambda: jax.block_until_ready(train(params, x, y, v, keys).delta)

  sides = []  # (label, role, clients, fn)
  for num in clients:
    sides.append((f"clipjax round, {loop} loop, {default_chunk or num} client(s)/step", "round",
                  num, clipjax_side(num, default_chunk)))
    if num == clients[0]:
      for chunk in chunks:
        if chunk != default_chunk:
          sides.append((f"clipjax round, {loop} loop, {chunk or num} client(s)/step", "chunk",
                        num, clipjax_side(num, chunk)))
      for streams in _STREAMS.value:
        sides.append((f"clipjax round, {loop} loop, {default_chunk or num} client(s)/step, "
                      f"{streams} streams", "streams", num,
                      clipjax_side(num, default_chunk, streams=int(streams))))
    sides.append(("pytorch client loop", "torch_loop", num,
                  lambda num=num: [torch_clients.train_client(tx[c], ty[c], n) for c in range(num)]))
  sides.append(("clipjax one client", "client", 1, clipjax_side(1, 1)))
  sides.append(("pytorch one client", "torch_client", 1,
                lambda: torch_clients.train_client(tx[0], ty[0], n)))
  if with_scan:
    sides.append(("clipjax one client, device scan", "scan", 1, clipjax_side(1, 0, "scan")))
  for unroll in (lstm_unroll if name == "leaf_lstm" else ()):
    variant = dataclasses.replace(model, module=model.module.clone(scan_unroll=unroll))
    sides.append((f"clipjax one client, LSTM scan_unroll={unroll}", "unroll", 1,
                  clipjax_side(1, 1, apply_fn=variant.apply)))
  rows = []
  for label, role, num, fn in sides:
    seconds = _time(fn, repeats)
    rows.append((name, label, role, num, seconds, num * n / seconds))
  return rows


def main(argv):
  del argv
  import torch  # pylint: disable=import-outside-toplevel
  clients = [int(c) for c in _CLIENTS.value]
  chunks = [int(c) for c in _CHUNKS.value]
  all_rows, result = [], {"bench": "train", "backend": jax.default_backend(),
                          "cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "jax": jax.__version__, "torch": torch.__version__, "width": _WIDTH.value}
  for name in _MODELS.value:
    if name not in SETTINGS:
      raise SystemExit(f"unknown model {name!r}; choose from {', '.join(SETTINGS)}")
    rows = bench_model(name, clients, chunks, _WIDTH.value, _EXAMPLES.value, _REPEATS.value,
                       _SCAN.value, [int(u) for u in _LSTM_UNROLL.value])
    all_rows += rows
    rate = {(role, num): r for _, _, role, num, _, r in rows}
    for num in clients:
      result[f"ratio_round_vs_torch_loop[{name}][C={num}]"] = (rate[("round", num)]
                                                              / rate[("torch_loop", num)])
    result[f"ratio_round_vs_torch_loop[{name}]"] = min(
        result[f"ratio_round_vs_torch_loop[{name}][C={num}]"] for num in clients)
    result[f"ratio_client_vs_torch[{name}]"] = rate[("client", 1)] / rate[("torch_client", 1)]
    for _, label, _, num, _, r in rows:
      result[f"samples_per_s[{name}][{label}][C={num}]"] = r
  print(summary_lib.markdown_table(["model", "side", "clients", "best s", "samples/s"],
                              [(m, label, num, sec, r) for m, label, _, num, sec, r in all_rows]))
  print(json.dumps(result))


if __name__ == "__main__":
  _cli.run(main)
