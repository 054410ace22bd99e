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
`bench` extra: `pip install -e '.[bench]'`; `--torch=false` times the clipjax sides alone.

XLA:CPU options (`--xla_modes=default,onednn,xnnpack,xnn_graph,fast_loops`, see `XLA_MODES`):
XLA_FLAGS are read once per process, so each mode times the clipjax round (the first C, default
loop and chunk) in its own subprocess, the modes one after another, and a second table gives
each mode's samples/s and its ratio to `default`. A mode named twice runs twice and keeps its
best, so interleaving (`default,onednn,default,onednn`) evens out drift on a shared machine:

  python scripts/bench_train.py --torch=false --clients=10 --xla_modes=default,onednn,xnnpack
"""

import dataclasses
import json
import os
import pathlib
import platform
import subprocess
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
_TORCH = flags.DEFINE_bool("torch", True, "Time the PyTorch sides (needs the bench extra).")
_XLA_MODES = flags.DEFINE_list("xla_modes", [], "XLA:CPU option sets (keys of XLA_MODES) to "
                               "time the clipjax round under, each in its own subprocess.")
_CHILD_XLA = flags.DEFINE_string("child_xla", "", "internal: time one XLA mode in this process")
_LR = 0.01

# XLA:CPU option sets tried for training (appended to XLA_FLAGS of a subprocess). oneDNN and
# XNNPACK are the libraries this jaxlib links for convolutions and matmuls; `fast_loops` is the
# ChaCha20 setting of `clipjax.secagg.chacha.FAST_XLA_FLAGS` (small while loops as one function).
XLA_MODES = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnnpack": "--xla_cpu_use_xnnpack=true",
    "xnn_graph": ("--xla_cpu_use_xnnpack=true "
                  "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY"),
    "fast_loops": ("--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1048576"
                   " --xla_cpu_prefer_vector_width=512"),
}

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


def bench_model(name, clients, chunks, width, n, repeats, with_scan, lstm_unroll=(),
                with_torch=True):
  batch, kind, shape = SETTINGS[name]
  n = n or 3 * batch
  model = get_model(name, width=width)
  params = model.init(jax.random.key(0))
  spec = local.LocalSpec(epochs=1, batch_size=batch)
  bf = lambda xc, yc, idx: example_batch(kind, xc, yc, idx)  # noqa: E731
  rng = np.random.default_rng(0)
  xs, ys, vs = _data(kind, shape, model.num_classes, max(clients), n, rng)
  if with_torch:
    import torch  # pylint: disable=import-outside-toplevel
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
    if with_torch:
      sides.append(("pytorch client loop", "torch_loop", num,
                    lambda num=num: [torch_clients.train_client(tx[c], ty[c], n)
                                     for c in range(num)]))
  if _CHILD_XLA.value:  # an XLA mode's subprocess times the round alone
    sides = [side for side in sides if side[1] == "round"]
  else:
    sides.append(("clipjax one client", "client", 1, clipjax_side(1, 1)))
  if with_torch:
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


def _xla_mode_rates(modes) -> dict:
  """(model, mode) -> samples/s of the clipjax round, each mode timed in its own subprocess."""
  unknown = [m for m in modes if m not in XLA_MODES]
  if unknown:
    raise SystemExit(f"unknown --xla_modes {unknown}; choose from {', '.join(XLA_MODES)}")
  rates = {}
  for mode in modes:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), XLA_MODES[mode]]).strip()
    cmd = [sys.executable, __file__, f"--child_xla={mode}", "--torch=false", "--scan=false",
           f"--models={','.join(_MODELS.value)}", f"--clients={_CLIENTS.value[0]}",
           f"--width={_WIDTH.value}", f"--examples={_EXAMPLES.value}",
           f"--repeats={_REPEATS.value}"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    for name, rate in json.loads(out.strip().splitlines()[-1])["round_samples_per_s"].items():
      rates[(name, mode)] = max(rate, rates.get((name, mode), 0.0))  # a repeated mode: best
  return rates


def main(argv):
  del argv
  clients = [int(c) for c in _CLIENTS.value]
  chunks = [int(c) for c in _CHUNKS.value]
  with_torch = _TORCH.value and not _CHILD_XLA.value
  all_rows, result = [], {"bench": "train", "backend": jax.default_backend(),
                          "cpu": platform.processor() or platform.machine(),
                          "cores": len(os.sched_getaffinity(0)), "jax": jax.__version__,
                          "width": _WIDTH.value, "xla_flags": os.environ.get("XLA_FLAGS", "")}
  if with_torch:
    import torch  # pylint: disable=import-outside-toplevel
    result.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  if _XLA_MODES.value and not _CHILD_XLA.value:
    rates = _xla_mode_rates(_XLA_MODES.value)
    base = {name: rates.get((name, "default")) for name in _MODELS.value}
    table = []
    for (name, mode), rate in rates.items():
      ratio = rate / base[name] if base[name] else None
      table.append((name, mode, XLA_MODES[mode] or "(none)", rate,
                    "" if ratio is None else f"{ratio:.2f}x"))
      result[f"xla_mode_samples_per_s[{name}][{mode}]"] = rate
      if ratio is not None:
        result[f"ratio_xla_mode_vs_default[{name}][{mode}]"] = ratio
    print(f"clipjax round, C={clients[0]}, by XLA:CPU option set (one subprocess each):")
    print(summary_lib.markdown_table(["model", "mode", "XLA_FLAGS", "samples/s", "vs default"],
                                     table))
  for name in _MODELS.value:
    if name not in SETTINGS:
      raise SystemExit(f"unknown model {name!r}; choose from {', '.join(SETTINGS)}")
    rows = bench_model(name, clients, chunks, _WIDTH.value, _EXAMPLES.value, _REPEATS.value,
                       _SCAN.value, [int(u) for u in _LSTM_UNROLL.value], with_torch)
    all_rows += rows
    rate = {(role, num): r for _, _, role, num, _, r in rows}
    if _CHILD_XLA.value:
      result.setdefault("round_samples_per_s", {})[name] = rate[("round", clients[0])]
      continue
    if with_torch:
      for num in clients:
        result[f"ratio_round_vs_torch_loop[{name}][C={num}]"] = (rate[("round", num)]
                                                                / rate[("torch_loop", num)])
      result[f"ratio_round_vs_torch_loop[{name}]"] = min(
          result[f"ratio_round_vs_torch_loop[{name}][C={num}]"] for num in clients)
      result[f"ratio_client_vs_torch[{name}]"] = rate[("client", 1)] / rate[("torch_client", 1)]
    for _, label, _, num, _, r in rows:
      result[f"samples_per_s[{name}][{label}][C={num}]"] = r
  if not _CHILD_XLA.value:
    print(summary_lib.markdown_table(["model", "side", "clients", "best s", "samples/s"],
                                     [(m, label, num, sec, r)
                                      for m, label, _, num, sec, r in all_rows]))
  print(json.dumps(result))


if __name__ == "__main__":
  _cli.run(main)
