"""Several devices and several processes give the single-device results (DESIGN 2.9).

Both run in fresh interpreters: JAX fixes its device count (and its distributed runtime) when
it starts, so a test cannot change them in the pytest process.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

SHARDED = r'''
import json, os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from tests.toy import make_setting

assert jax.device_count() == 4, jax.devices()
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("clients",))
counts = [5, 3, 6, 4, 6, 2, 5]
out = {}
for method, secure, loop in [("clip_compute", True, "scan"), ("fedavg", False, "scan"),
                             ("clip_compute", True, "host")]:
  runs = {}
  # chunk 1 and 3 are padded to 4 clients (one per device), 4 is one per device, 0 the cohort
  cases = [("one", {})] + [(f"sharded{c}", {"mesh": mesh, "chunk": c}) for c in (1, 3, 4, 0)]
  for name, kw in cases:
    algo, params, _, _ = make_setting(method, counts, secure=secure, loop=loop, **kw)
    state, rows = algo.init(params), []
    for r in range(3):
      state, row = algo.apply(state, r)
      rows.append({k: row.get(k) for k in ("keep_fraction", "stragglers", "invariant_units",
                                           "train_loss", "round_time_s", "secagg_survivors")})
    runs[name] = {"rows": rows,
                  "params": [np.asarray(a).tolist() for a in jax.tree.leaves(state.server.params)]}
  out[f"{method}/{loop}"] = runs
print("RESULT" + json.dumps(out))
'''


def _python(code: str, timeout: int = 300, env=None) -> str:
  env = dict(os.environ if env is None else env, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _close(a, b, rtol):
  import numpy as np
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-6)


def test_a_round_sharded_over_four_devices_equals_the_one_device_round():
  """Every chunk size, both local loops: the virtual times exactly, losses and the model
  within the order of floating-point sums (the chunk and device layout changes only that)."""
  out = _python(SHARDED, timeout=600)
  result = json.loads(out.split("RESULT", 1)[1])
  assert set(result) == {"clip_compute/scan", "fedavg/scan", "clip_compute/host"}
  for method, runs in result.items():
    one = runs["one"]
    for name in ("sharded1", "sharded3", "sharded4", "sharded0"):
      sharded = runs[name]
      for a, b in zip(one["rows"], sharded["rows"]):
        for key in ("keep_fraction", "stragglers", "invariant_units", "secagg_survivors",
                    "round_time_s"):
          assert a[key] == b[key], (method, name, key)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
      _close(one["params"], sharded["params"], rtol=1e-5)


UNSHARDED_LOOP = r'''
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np, optax
from clipjax.fl import local, training
from tests.toy import apply_fn, init_params, make_data

mesh = jax.sharding.Mesh(np.array(jax.devices()), ("clients",))
put = lambda a: jax.device_put(a, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("clients")))
x, y, valid = (put(np.asarray(a)) for a in make_data([5, 3, 6, 4]))
train = training.make_trainer(apply_fn, lambda xc, yc, i: (xc[i], yc[i]), optax.sgd(0.5),
                              local.LocalSpec(epochs=1, batch_size=6), loop="host", client_batch=1)
keys = put(jax.random.split(jax.random.key(0), 4))
try:
  train(init_params(), x, y, valid, keys)
except ValueError as e:
  print("REFUSED", e)
'''


def test_a_host_loop_without_shards_refuses_sharded_clients_instead_of_hanging():
  out = _python(UNSHARDED_LOOP, timeout=120)
  assert "REFUSED the host loop got clients sharded over 4 devices" in out
  assert "mesh=" in out


def _train(workdir, *extra, **popen):
  cmd = [sys.executable, "scripts/train.py", "--config", "configs/quickstart.py",
         f"--workdir={workdir}", "--config.rounds=3", "--config.eval_every=3",
         "--config.num_clients=8", "--config.cohort_size=6", "--config.model.width=0.125",
         "--config.scale.chunk_clients=2", *extra]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("XLA_FLAGS", None)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **popen)


def _rows(workdir):
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_give_the_one_process_run(tmp_path):
  # A free port for the coordinator: bind to 0 and let the OS choose.
  import socket
  with socket.socket() as sock:
    sock.bind(("localhost", 0))
    port = sock.getsockname()[1]
  # Drop-outs in both; the two processes simulate the secure sum with `sum` (its exact output
  # without the masks), so this also checks `sum` over processes against the one-process protocol.
  drops = "--config.secagg.dropout_rate=0.2"
  one = _train(tmp_path / "one", drops)
  out_one, _ = one.communicate(timeout=600)
  assert one.returncode == 0, out_one[-3000:]
  procs = [_train(tmp_path / "two", drops, "--config.secagg.simulate=sum",
                  f"--coordinator=localhost:{port}", "--num_processes=2",
                  f"--process_id={i}") for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  single, lead = _rows(tmp_path / "one"), _rows(tmp_path / "two")
  other = _rows(tmp_path / "two" / "process_1")
  assert len(single) == len(lead) == len(other) == 3
  for a, b, c in zip(single, lead, other):
    for key in ("cohort", "stragglers", "keep_fraction", "invariant_units", "slack_units",
                "survivors", "secagg_survivors", "messages", "train_loss", "round_time_s",
                "test_accuracy"):
      assert a.get(key) == b.get(key) == c.get(key), key
  assert any(row["stragglers"] for row in single)  # CLIP pruned in some round
  assert any(row.get("secagg_dropped") for row in single)
  timing = ("host_seconds", "secagg_seconds")
  same = lambda row: {k: v for k, v in row.items() if not k.startswith(timing)}  # noqa: E731
  assert [same(r) for r in lead] == [same(r) for r in other] == [same(r) for r in single]
