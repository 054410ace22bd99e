"""Unit specs, unit masks, sub-network extraction and invariance scores."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.models import get_model
from clipjax.models.units import (ParamSlice, UnitLayer, check_spec, extract_subnetwork,
                                  ones_prune_mask, param_prune_mask, scatter_subnetwork,
                                  unit_scores)

# Small widths keep compile and run times low; the structure is that of the full models.
SMALL = {"vgg9": 0.125, "leaf_cnn": 0.125, "leaf_lstm": 0.0625}
BATCH = 3


@functools.lru_cache(maxsize=None)
def _setup(name, seed=0):
  model_def = get_model(name, width=SMALL[name])
  params = jax.jit(model_def.init)(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  if model_def.input_dtype == jnp.int32:
    x = jnp.asarray(rng.integers(0, 80, (BATCH, *model_def.input_shape)), jnp.int32)
  else:
    x = jnp.asarray(rng.normal(size=(BATCH, *model_def.input_shape)), jnp.float32)
  y = jnp.asarray(rng.integers(0, model_def.num_classes, BATCH), jnp.int32)
  return model_def, params, x, y


def _random_keep(spec, seed):
  """Random kept units per layer, at least one kept and one pruned."""
  rng = np.random.default_rng(seed)
  keep = {}
  for layer in spec:
    k = int(rng.integers(1, layer.size))
    keep[layer.name] = np.isin(np.arange(layer.size), rng.choice(layer.size, k, replace=False))
  return keep


def _loss(model_def, params, x, y, prune_mask=None):
  logits = model_def.apply(params, x, prune_mask)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


@pytest.mark.parametrize("name", list(SMALL))
def test_ones_prune_mask_equals_no_mask(name):
  model_def, params, x, _ = _setup(name)
  apply = jax.jit(model_def.apply)
  plain = apply(params, x)
  masked = apply(params, x, ones_prune_mask(model_def.unit_spec))
  # Multiplying by 1.0 is exact in IEEE arithmetic, so the logits are bit-identical.
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(masked))


@pytest.mark.parametrize("name", list(SMALL))
def test_masked_model_equals_extracted_subnetwork(name):
  """Logits and gradients of the masked full-shape model equal the dense sub-network's.

  Tolerance: the full-shape sums also add the pruned units' exact zeros, which changes how XLA
  blocks and orders float32 reductions, so results agree to float32 rounding only. Measured
  over 5 random masks per model: logits max abs difference 4.2e-7 (|logits| <= 1.0), gradients
  2.2e-7 (|grad| <= 0.7). atol 1e-5 / 1e-6 leave a >4x margin; any real error (a unit leaking
  through the mask) moves values by orders of magnitude more.
  """
  model_def, params, x, y = _setup(name)
  spec = model_def.unit_spec
  keep = _random_keep(spec, seed=1)
  prune_mask = {n: jnp.asarray(k, jnp.float32) for n, k in keep.items()}
  sub_def = model_def.with_widths({n: int(k.sum()) for n, k in keep.items()})
  sub_params = extract_subnetwork(spec, params, keep)
  check_spec(sub_def.unit_spec, sub_params)
  np.testing.assert_allclose(jax.jit(model_def.apply)(params, x, prune_mask),
                             jax.jit(sub_def.apply)(sub_params, x), rtol=1e-5, atol=1e-5)

  grads = jax.jit(jax.grad(lambda p: _loss(model_def, p, x, y, prune_mask)))(params)
  sub_grads = jax.jit(jax.grad(lambda p: _loss(sub_def, p, x, y)))(sub_params)
  scattered = scatter_subnetwork(spec, sub_grads, keep, like=params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads, scattered)


@pytest.mark.parametrize("name", list(SMALL))
def test_pruned_units_get_exactly_zero_gradient(name):
  model_def, params, x, y = _setup(name, seed=2)
  spec = model_def.unit_spec
  keep = _random_keep(spec, seed=3)
  prune_mask = {n: jnp.asarray(k, jnp.float32) for n, k in keep.items()}
  grads = jax.jit(jax.grad(lambda p: _loss(model_def, p, x, y, prune_mask)))(params)
  pmask = jax.jit(functools.partial(param_prune_mask, spec))(prune_mask, params)
  for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(pmask)):
    g, m = np.asarray(g), np.asarray(m)
    assert np.all(g[m == 0] == 0.0)
  # Kept coordinates do train (the test is not vacuous).
  assert any(np.any(np.asarray(g)[np.asarray(m) == 1] != 0)
             for g, m in zip(jax.tree.leaves(grads), jax.tree.leaves(pmask)))


def test_param_prune_mask_structure_jit_and_vmap():
  model_def, params, _, _ = _setup("leaf_cnn")
  spec = model_def.unit_spec
  keeps = [_random_keep(spec, seed) for seed in range(4)]
  stacked = {n: jnp.asarray(np.stack([k[n] for k in keeps]), jnp.float32) for n in keeps[0]}
  fn = jax.jit(jax.vmap(lambda pm: param_prune_mask(spec, pm, params)))
  pmasks = fn(stacked)
  for c, keep in enumerate(keeps):
    k0, k1, kd = (keep[n].astype(np.float32) for n in ("conv0", "conv1", "dense0"))
    np.testing.assert_array_equal(pmasks["conv1"]["kernel"][c],
                                  np.broadcast_to(k0[:, None] * k1[None, :], (5, 5, 4, 8)))
    np.testing.assert_array_equal(pmasks["conv1"]["bias"][c], k1)
    # conv1 -> flatten -> dense0: row r belongs to channel r % 8.
    rows = np.tile(k1, 7 * 7)
    np.testing.assert_array_equal(pmasks["dense0"]["kernel"][c], rows[:, None] * kd[None, :])
    np.testing.assert_array_equal(pmasks["logits"]["kernel"][c],
                                  np.broadcast_to(kd[:, None], (256, 62)))
    np.testing.assert_array_equal(pmasks["logits"]["bias"][c], np.ones(62, np.float32))
    assert pmasks["conv0"]["kernel"].dtype == jnp.float32


def test_lstm_spec_covers_gates_and_recurrent_rows():
  model_def, params, _, _ = _setup("leaf_lstm")
  keep = _random_keep(model_def.unit_spec, seed=5)
  prune_mask = {n: jnp.asarray(k, jnp.float32) for n, k in keep.items()}
  pmask = jax.jit(functools.partial(param_prune_mask, model_def.unit_spec))(prune_mask, params)
  k0, k1 = (keep[n].astype(np.float32) for n in ("lstm0", "lstm1"))
  for g in ("hi", "hf", "hg", "ho"):
    np.testing.assert_array_equal(pmask["lstm0"][g]["kernel"], k0[:, None] * k0[None, :])
    np.testing.assert_array_equal(pmask["lstm0"][g]["bias"], k0)
  for g in ("ii", "if", "ig", "io"):
    np.testing.assert_array_equal(pmask["lstm0"][g]["kernel"], np.ones((8, 1)) * k0[None, :])
    np.testing.assert_array_equal(pmask["lstm1"][g]["kernel"], k0[:, None] * k1[None, :])
  np.testing.assert_array_equal(pmask["embed"]["embedding"], np.ones((80, 8), np.float32))
  np.testing.assert_array_equal(pmask["logits"]["kernel"], np.broadcast_to(k1[:, None], (16, 80)))


@pytest.mark.parametrize("name", list(SMALL))
def test_extract_scatter_round_trip(name):
  model_def, params, _, _ = _setup(name)
  spec = model_def.unit_spec
  keep = _random_keep(spec, seed=7)
  pmask = jax.jit(functools.partial(param_prune_mask, spec))(
      {n: jnp.asarray(k, jnp.float32) for n, k in keep.items()}, params)
  sub = extract_subnetwork(spec, params, keep)
  full = scatter_subnetwork(spec, sub, keep, like=params)
  jax.tree.map(lambda f, p, m: np.testing.assert_array_equal(f, np.asarray(p) * np.asarray(m)),
               full, params, pmask)
  again = extract_subnetwork(spec, full, keep)
  jax.tree.map(np.testing.assert_array_equal, again, sub)


def _tiny_spec():
  # Layer "a" (2 units) feeds "b" through a flatten with 2 positions: b's rows are tiled.
  return (UnitLayer("a", 2, (ParamSlice(("a", "kernel"), -1, "incoming"),
                             ParamSlice(("a", "bias"), 0, "bias"),
                             ParamSlice(("b", "kernel"), 0, "outgoing", tile=2))),)


def test_unit_scores_hand_checked_with_tile():
  prev = {"a": {"kernel": np.ones((3, 2), np.float32), "bias": np.full(2, 2.0, np.float32)},
          "b": {"kernel": np.full((4, 1), 4.0, np.float32), "bias": np.ones(1, np.float32)}}
  now = jax.tree.map(np.copy, prev)
  now["a"]["kernel"][2, 1] = 1.5  # unit 1: |0.5| / 1 = 0.5
  now["a"]["bias"][1] = 1.0  # unit 1: |1| / 2 = 0.5 (tie, max stays 0.5)
  now["a"]["kernel"][0, 0] = 0.9  # unit 0: 0.1
  now["b"]["kernel"][2, 0] = 10.0  # row 2 -> unit 2 % 2 = 0: |6| / 4 = 1.5
  now["b"]["bias"][0] = 100.0  # not in any group
  scores = jax.jit(lambda a, b: unit_scores(_tiny_spec(), a, b, kind="max_relative"))(now, prev)
  np.testing.assert_allclose(scores["a"], [1.5, 0.5], rtol=1e-6)
  # eps keeps a zero previous weight finite: |1 - 0| / (0 + 1e-8).
  prev["a"]["bias"][0] = 0.0
  now["a"]["bias"][0] = 1.0
  scores = unit_scores(_tiny_spec(), now, prev, eps=1e-8, kind="max_relative")
  np.testing.assert_allclose(scores["a"], [1e8, 0.5], rtol=1e-6)
  assert scores["a"].dtype == jnp.float32
  # The default, relative_l2, of the same change: ||dw|| / ||w|| over each unit's group.
  l2 = unit_scores(_tiny_spec(), now, prev, eps=1e-8)
  group = lambda w, j: np.concatenate([w["a"]["kernel"][:, j], w["a"]["bias"][j:j + 1],
                                       w["b"]["kernel"][j::2, 0]])  # noqa: E731
  want = [np.linalg.norm(group(now, j) - group(prev, j)) / (np.linalg.norm(group(prev, j)) + 1e-8)
          for j in (0, 1)]
  np.testing.assert_allclose(l2["a"], want, rtol=1e-6)


def test_unit_scores_zero_when_unchanged_and_vmappable():
  model_def, params, _, _ = _setup("leaf_lstm")
  scores = jax.jit(lambda w: unit_scores(model_def.unit_spec, w, w))(params)
  assert all(np.all(np.asarray(s) == 0) for s in scores.values())
  stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
  batched = jax.vmap(lambda w: unit_scores(model_def.unit_spec, w, params))(stacked)
  np.testing.assert_allclose(batched["lstm1"][1], np.ones(16), rtol=1e-6)


def test_check_spec_catches_wrong_specs():
  model_def, params, _, _ = _setup("leaf_cnn")
  spec = model_def.unit_spec
  check_spec(spec, params)
  conv1 = spec[1]
  bad_tile = dataclasses.replace(conv1, slices=conv1.slices[:2] + (
      dataclasses.replace(conv1.slices[2], tile=1),))
  bad_size = dataclasses.replace(conv1, size=conv1.size + 1)
  bad_path = dataclasses.replace(conv1, slices=(ParamSlice(("conv9", "kernel"), -1, "incoming"),))
  bad_axis = dataclasses.replace(conv1, slices=(ParamSlice(("conv1", "bias"), 1, "bias"),))
  bad_role = dataclasses.replace(conv1, slices=(ParamSlice(("conv1", "bias"), 0, "weights"),))
  dup_axis = dataclasses.replace(conv1, slices=conv1.slices + (conv1.slices[0],))
  for bad, match in [(bad_tile, "tile"), (bad_size, "tile"), (bad_path, "not found"),
                     (bad_axis, "out of range"), (bad_role, "role"), (dup_axis, "claimed")]:
    with pytest.raises(ValueError, match=match):
      check_spec((spec[0], bad, spec[2]), params)
  with pytest.raises(ValueError, match="duplicate"):
    check_spec((spec[0], spec[0]), params)
