"""The host loop of jitted steps (the CPU default) against the device scan (DESIGN 2.5)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clipjax.data import example_batch, pooled_batch
from clipjax.fl import evaluate as evaluate_lib
from clipjax.fl import local
from clipjax.fl import clients as round_lib
from clipjax.fl import training
from clipjax.models import get_model, units

from tests.fl.test_clients import apply_fn, batch_fn, init_params, make_clients


def _scan_reference(spec, optimizer, params, x, y, valid, keys, prune_mask=None, ppm=None):
  update = local.make_client_update(apply_fn, batch_fn, optimizer, spec)
  return jax.jit(lambda p, *a: round_lib.train_clients(update, p, *a))(
      params, x, y, valid, keys, prune_mask, ppm)


def _assert_same(got, want):
  chex.assert_trees_all_close(got.delta, want.delta, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.loss_sum, want.loss_sum, rtol=1e-5)
  np.testing.assert_array_equal(got.num_steps, want.num_steps)
  np.testing.assert_array_equal(got.num_seen, want.num_seen)


@pytest.mark.parametrize("client_batch,streams", [(1, 1), (2, 1), (4, 1), (0, 1), (1, 3)])
def test_host_loop_equals_scan_for_every_chunk_size(client_batch, streams):
  # 7 clients: chunks of 2 and 4 leave a partly filled last chunk.
  x, y, valid, _ = make_clients(7, 9, seed=3)
  spec = local.LocalSpec(epochs=2, batch_size=3)
  opt = optax.sgd(0.1, momentum=0.9)
  params = init_params()
  keys = round_lib.client_keys(jax.random.key(5), jnp.int32(2), jnp.arange(7))
  want = _scan_reference(spec, opt, params, x, y, valid, keys)
  train = training.make_trainer(apply_fn, batch_fn, opt, spec, loop="host",
                                client_batch=client_batch, streams=streams)
  got = train(params, x, y, valid, keys)
  assert got.delta["w"].shape == (7, *params["w"].shape)
  _assert_same(got, want)


def test_host_loop_equals_scan_with_prune_masks_on_a_real_model():
  model = get_model("leaf_cnn", width=0.125)
  params = model.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  num, slots = 3, 11
  x = jnp.asarray(rng.integers(0, 256, (num, slots, 28, 28, 1), dtype=np.uint8))
  y = jnp.asarray(rng.integers(0, 62, (num, slots)).astype(np.int32))
  valid = jnp.asarray(np.arange(slots)[None] < np.array([[11], [4], [7]]))
  prune_mask = {layer.name: jnp.asarray(rng.random((num, layer.size)) < 0.7, jnp.float32)
                for layer in model.unit_spec}
  ppm = jax.vmap(lambda m: units.param_prune_mask(model.unit_spec, m, params))(prune_mask)
  bf = lambda xc, yc, idx: example_batch("images", xc, yc, idx)  # noqa: E731
  spec = local.LocalSpec(epochs=1, batch_size=4)
  keys = round_lib.client_keys(jax.random.key(1), jnp.int32(0), jnp.arange(num))
  update = local.make_client_update(model.apply, bf, optax.sgd(0.05), spec)
  want = jax.jit(lambda p, *a: round_lib.train_clients(update, p, *a))(
      params, x, y, valid, keys, prune_mask, ppm)
  got = training.make_trainer(model.apply, bf, optax.sgd(0.05), spec, loop="host",
                              client_batch=2)(params, x, y, valid, keys, prune_mask, ppm)
  for g, w, m in zip(jax.tree.leaves(got.delta), jax.tree.leaves(want.delta),
                     jax.tree.leaves(ppm)):
    assert np.all(np.asarray(g)[np.asarray(m) == 0] == 0)
    scale = float(np.abs(w).max())
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)
  np.testing.assert_array_equal(got.num_steps, want.num_steps)


def test_host_loop_compiles_its_step_once_across_rounds():
  x, y, valid, counts = make_clients(5, 8, seed=1)
  spec = local.LocalSpec(epochs=1, batch_size=2)
  train = training.make_trainer(apply_fn, batch_fn, optax.sgd(0.1), spec, loop="host",
                                client_batch=2)
  params = init_params()
  for r in range(3):
    keys = round_lib.client_keys(jax.random.key(0), jnp.int32(r), jnp.arange(5))
    out = train(params, x, y, valid, keys)
    params = jax.tree.map(lambda p, d: p + d.mean(0), params, out.delta)
  assert train.compiled_step_count() == 1
  np.testing.assert_array_equal(out.num_steps, -(-counts // 2))


def test_host_loop_padded_slots_and_clients_change_nothing():
  x, y, valid, counts = make_clients(2, 6, seed=4)
  spec = local.LocalSpec(epochs=2, batch_size=3)
  opt = optax.sgd(0.05, momentum=0.9)
  params = init_params()
  keys = round_lib.client_keys(jax.random.key(9), jnp.int32(0), jnp.arange(2))
  train = training.make_trainer(apply_fn, batch_fn, opt, spec, loop="host", client_batch=1)
  base = train(params, x, y, valid, keys)
  pad = 7  # extra padded slots: padded steps that the host loop skips and the scan idles through
  padded = train(params, jnp.pad(x, ((0, 0), (0, pad), (0, 0))), jnp.pad(y, ((0, 0), (0, pad))),
                 jnp.pad(valid, ((0, 0), (0, pad))), keys)
  chex.assert_trees_all_close(base.delta, padded.delta, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(padded.num_steps, 2 * -(-counts // 3))


def test_bad_loop_choices_are_rejected():
  spec = local.LocalSpec(epochs=1, batch_size=2)
  with pytest.raises(ValueError, match="local loop"):
    training.make_trainer(apply_fn, batch_fn, optax.sgd(0.1), spec, loop="while")
  with pytest.raises(ValueError, match="client_batch"):
    training.make_trainer(apply_fn, batch_fn, optax.sgd(0.1), spec, client_batch=-2)


def test_defaults_are_host_on_cpu_and_scan_elsewhere():
  assert training.default_loop("cpu") == "host"
  assert training.default_loop("gpu") == "scan"
  assert training.default_client_batch("vgg9", "cpu") >= 1
  assert training.default_client_batch("vgg9", "gpu") == 0


@pytest.mark.parametrize("kind", ["images", "text"])
def test_pooled_evaluation_equals_per_client_evaluation(kind):
  rng = np.random.default_rng(2)
  if kind == "images":
    model = get_model("leaf_cnn", width=0.125)
    x = jnp.asarray(rng.integers(0, 256, (4, 9, 28, 28, 1), dtype=np.uint8))
    y = jnp.asarray(rng.integers(0, 62, (4, 9)).astype(np.int32))
  else:
    model = get_model("leaf_lstm", width=0.0625)
    x = jnp.asarray(rng.integers(0, 80, (4, 9 + 80), dtype=np.uint8))
    y = jnp.zeros((4, 0), jnp.int32)
  valid = jnp.asarray(np.arange(9)[None] < np.array([[9], [0], [3], [5]]))
  params = model.init(jax.random.key(3))
  bf = lambda xc, yc, idx: example_batch(kind, xc, yc, idx)  # noqa: E731
  want = jax.vmap(evaluate_lib.make_evaluate(model.apply, bf, 4), in_axes=(None, 0, 0, 0))(
      params, x, y, valid).summary()
  pooled = lambda xa, ya, c, idx: pooled_batch(kind, xa, ya, c, idx)  # noqa: E731
  got = evaluate_lib.PooledEvaluator(model.apply, pooled, 4, np.asarray(valid))(
      params, x, y).summary()
  assert got["test_examples"] == want["test_examples"] == 17
  assert got["test_accuracy"] == pytest.approx(want["test_accuracy"])
  assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-5)
