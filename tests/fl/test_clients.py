"""Local training, the vmapped round and FedAvg on a tiny linear model (hand-checkable)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clipjax.fl import evaluate as evaluate_lib
from clipjax.fl import local
from clipjax.fl import clients as round_lib
from clipjax.fl import server as server_lib

FEATURES, CLASSES = 5, 3


def apply_fn(params, inputs, prune_mask=None):
  del prune_mask
  return inputs @ params["w"] + params["b"]


def batch_fn(x, y, idx):
  return x[idx], y[idx]


def make_clients(num_clients, slots, seed=0):
  rng = np.random.default_rng(seed)
  counts = rng.integers(1, slots + 1, size=num_clients)
  x = rng.normal(size=(num_clients, slots, FEATURES)).astype(np.float32)
  y = rng.integers(0, CLASSES, size=(num_clients, slots)).astype(np.int32)
  valid = np.arange(slots)[None, :] < counts[:, None]
  x = np.where(valid[..., None], x, 0.0).astype(np.float32)
  y = np.where(valid, y, 0).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(valid), counts


def init_params(seed=1):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(FEATURES, CLASSES)).astype(np.float32) * 0.1),
          "b": jnp.zeros((CLASSES,), jnp.float32)}


def test_batch_indices_cover_valid_slots_once_per_epoch():
  valid = jnp.arange(13) < 9
  idx, ok = local.batch_indices(jax.random.key(0), valid, local.LocalSpec(epochs=2, batch_size=4))
  assert idx.shape == (8, 4) and ok.shape == (8, 4)
  for epoch in range(2):
    seen = np.asarray(idx[epoch * 4:(epoch + 1) * 4])[np.asarray(ok[epoch * 4:(epoch + 1) * 4])]
    assert sorted(seen.tolist()) == list(range(9))


def test_vmap_over_clients_equals_python_loop():
  x, y, valid, _ = make_clients(6, 11)
  spec = local.LocalSpec(epochs=2, batch_size=4)
  client_update = local.make_client_update(apply_fn, batch_fn, optax.sgd(0.1, momentum=0.9), spec)
  params = init_params()
  keys = round_lib.client_keys(jax.random.key(3), jnp.int32(0), jnp.arange(6))
  batched = jax.jit(lambda p, *a: round_lib.train_clients(client_update, p, *a))(
      params, x, y, valid, keys)
  one = jax.jit(client_update)
  for c in range(6):
    single = one(params, x[c], y[c], valid[c], keys[c])
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[c], batched.delta), single.delta,
                                rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched.loss_sum[c], single.loss_sum, rtol=1e-5)
    assert int(batched.num_steps[c]) == int(single.num_steps)


def test_padded_slots_and_steps_change_nothing():
  x, y, valid, counts = make_clients(1, 7, seed=4)
  spec = local.LocalSpec(epochs=3, batch_size=3)
  client_update = jax.jit(local.make_client_update(
      apply_fn, batch_fn, optax.sgd(0.05, momentum=0.9), spec))
  params = init_params()
  key = jax.random.key(9)
  base = client_update(params, x[0], y[0], valid[0], key)
  pad = 10  # four extra padded steps per epoch, interleaved between epochs
  xp = jnp.pad(x[0], ((0, pad), (0, 0)))
  yp = jnp.pad(y[0], (0, pad))
  vp = jnp.pad(valid[0], (0, pad))
  padded = client_update(params, xp, yp, vp, key)
  chex.assert_trees_all_close(base.delta, padded.delta, rtol=1e-6, atol=1e-7)
  assert int(base.num_steps) == int(padded.num_steps) == 3 * -(-int(counts[0]) // 3)
  np.testing.assert_allclose(base.num_seen, 3 * counts[0])


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def test_one_fedavg_round_against_hand_computation():
  # One full-batch SGD step per client, then the example-weighted mean and w + mean delta.
  x, y, valid, counts = make_clients(4, 8, seed=2)
  lr = 0.5
  spec = local.LocalSpec(epochs=1, batch_size=8)
  client_update = local.make_client_update(apply_fn, batch_fn, optax.sgd(lr), spec)
  opt = server_lib.make_server_optimizer("sgd", 1.0)
  params = init_params()
  state = server_lib.server_init(params, opt)
  round_fn = jax.jit(round_lib.make_round(client_update, opt))
  keys = round_lib.client_keys(jax.random.key(0), jnp.int32(0), jnp.arange(4))
  new_state, metrics = round_fn(state, x, y, valid, jnp.asarray(counts, jnp.float32), keys)

  w, b = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
  total_w, total_b, loss = np.zeros_like(w), np.zeros_like(b), 0.0
  for c in range(4):
    n = counts[c]
    xc, yc = np.asarray(x[c][:n], np.float64), np.asarray(y[c][:n])
    p = _softmax(xc @ w + b)
    onehot = np.eye(CLASSES)[yc]
    gw, gb = xc.T @ (p - onehot) / n, (p - onehot).mean(0)
    total_w += n * (-lr * gw)
    total_b += n * (-lr * gb)
    loss += -np.log(p[np.arange(n), yc]).sum()
  expect_w = w + total_w / counts.sum()
  expect_b = b + total_b / counts.sum()
  np.testing.assert_allclose(new_state.params["w"], expect_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_state.params["b"], expect_b, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics.train_loss, loss / counts.sum(), rtol=1e-5)
  chex.assert_trees_all_equal(new_state.prev_params, params)
  assert int(new_state.round) == 1


def test_round_compiles_once_across_rounds():
  x, y, valid, counts = make_clients(3, 6)
  spec = local.LocalSpec(epochs=1, batch_size=2)
  client_update = local.make_client_update(apply_fn, batch_fn, optax.sgd(0.1), spec)
  opt = server_lib.make_server_optimizer("adam", 0.01)
  state = server_lib.server_init(init_params(), opt)
  round_fn = jax.jit(chex.assert_max_traces(round_lib.make_round(client_update, opt), n=1))
  weights = jnp.asarray(counts, jnp.float32)
  # optax's Adam bias correction computes `decay ** count` with an int32 count, which
  # strict promotion rejects; clipjax's own arithmetic stays strict elsewhere.
  with jax.numpy_dtype_promotion("standard"):
    for r in range(4):
      keys = round_lib.client_keys(jax.random.key(0), jnp.int32(r), jnp.arange(3))
      state, _ = round_fn(state, x, y, valid, weights, keys)
  assert int(state.round) == 4


def test_weighted_mean_all_zero_weights_is_no_change():
  deltas = {"w": jnp.ones((3, 2))}
  out = server_lib.weighted_mean(deltas, jnp.zeros((3,), jnp.float32))
  np.testing.assert_array_equal(out["w"], np.zeros(2))


def test_participation_mean_averages_over_trainers_only():
  deltas = {"w": jnp.asarray([[2.0, 0.0], [4.0, 6.0]])}
  masks = {"w": jnp.asarray([[1.0, 0.0], [1.0, 1.0]])}
  out = server_lib.participation_mean(deltas, jnp.asarray([1.0, 3.0]), masks)
  np.testing.assert_allclose(out["w"], [(2 + 12) / 4, 6.0])


def test_evaluate_sums_match_numpy():
  x, y, valid, counts = make_clients(3, 7, seed=5)
  params = init_params(3)
  evaluate = jax.jit(jax.vmap(evaluate_lib.make_evaluate(apply_fn, batch_fn, 3),
                              in_axes=(None, 0, 0, 0)))
  sums = evaluate(params, x, y, valid)
  correct = 0
  for c in range(3):
    logits = np.asarray(x[c][:counts[c]]) @ np.asarray(params["w"]) + np.asarray(params["b"])
    correct += int((logits.argmax(-1) == np.asarray(y[c][:counts[c]])).sum())
  summary = sums.summary()
  assert summary["test_examples"] == counts.sum()
  assert summary["test_accuracy"] == pytest.approx(correct / counts.sum())


def test_bad_local_spec_is_rejected():
  with pytest.raises(ValueError, match="batch_size"):
    local.LocalSpec(epochs=1, batch_size=0)
  with pytest.raises(ValueError, match="server optimizer"):
    server_lib.make_server_optimizer("lbfgs", 1.0)
