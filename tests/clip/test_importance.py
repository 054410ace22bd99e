"""Issue 25: per-unit importance by hand on the toy MLP, and the criteria's mask rules on known
scores (magnitude, the Taylor oracle, lowest-score drop, a fixed straggler keep fraction)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import toy
from clipjax import methods
from clipjax.clip import importance, invariance
from clipjax.fl import local, training

F, H, K = toy.F, toy.H, toy.K


def _np(params):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


def _hand_loss(p, x, y, unit_mask):
  """Mean cross-entropy of the toy MLP with its hidden activations times `unit_mask`."""
  h = np.maximum(x @ p["hidden"]["kernel"] + p["hidden"]["bias"], 0) * unit_mask
  z = h @ p["out"]["kernel"] + p["out"]["bias"]
  z = z - z.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  return -logp[np.arange(len(y)), y].mean()


def _batch(n=6, seed=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, F)).astype(np.float32)
  y = rng.integers(0, K, size=n).astype(np.int32)
  return x, y


def test_removal_importance_is_the_loss_increase_of_each_unit_removed_by_hand():
  params = toy.init_params(seed=2)
  x, y = _batch()
  ok = np.ones(len(y), bool)
  got = importance.removal_importance(toy.SPEC, toy.apply_fn, params, jnp.asarray(x),
                                      jnp.asarray(y), jnp.asarray(ok), units_at_once=3)
  p = _np(params)
  base = _hand_loss(p, x, y, np.ones(H))
  want = [_hand_loss(p, x, y, 1.0 - np.eye(H)[j]) - base for j in range(H)]
  np.testing.assert_allclose(np.asarray(got["hidden"]), want, rtol=1e-4, atol=1e-6)
  assert np.ptp(want) > 1e-3  # the units really differ, so the check can fail
  # Padded examples (ok = False) do not count.
  pad_x = np.concatenate([x, 50 * np.ones((2, F), np.float32)])
  pad_y = np.concatenate([y, np.zeros(2, np.int32)])
  padded = importance.removal_importance(toy.SPEC, toy.apply_fn, params, jnp.asarray(pad_x),
                                         jnp.asarray(pad_y),
                                         jnp.asarray(np.r_[ok, False, False]))
  np.testing.assert_allclose(np.asarray(padded["hidden"]), want, rtol=1e-4, atol=1e-6)


def test_taylor_importance_is_the_group_sum_of_w_times_grad_by_hand():
  params = toy.init_params(seed=2)
  x, y = _batch()
  got = importance.taylor_importance(toy.SPEC, toy.apply_fn, params, jnp.asarray(x),
                                     jnp.asarray(y), jnp.ones(len(y), bool))
  p = _np(params)
  # The hand gradient of the mean loss (toy.hand_delta is -LR x it, summed loss / n).
  delta, _ = toy.hand_delta(params, x.astype(np.float64), y, np.ones(H))
  g = jax.tree.map(lambda d: -np.asarray(d) / toy.LR, delta)
  want = np.abs((p["hidden"]["kernel"] * g["hidden"]["kernel"]).sum(0)
                + p["hidden"]["bias"] * g["hidden"]["bias"]
                + (p["out"]["kernel"] * g["out"]["kernel"]).sum(1))
  np.testing.assert_allclose(np.asarray(got["hidden"]), want, rtol=1e-4, atol=1e-7)
  # For a ReLU unit the group sum is twice the derivative of the loss in the unit's output
  # scale: a finite difference of the hand loss in the mask.
  eps = 1e-6
  base = _hand_loss(p, x, y, np.ones(H))
  d_mask = np.array([(_hand_loss(p, x, y, 1.0 - eps * np.eye(H)[j]) - base) / -eps
                     for j in range(H)])
  np.testing.assert_allclose(np.asarray(got["hidden"]), np.abs(2 * d_mask), rtol=1e-3, atol=1e-6)
  # Signed: minus half the group sum, the first-order loss change of removing the unit.
  signed = importance.taylor_importance(toy.SPEC, toy.apply_fn, params, jnp.asarray(x),
                                        jnp.asarray(y), jnp.ones(len(y), bool), signed=True)
  np.testing.assert_allclose(np.asarray(signed["hidden"]), -d_mask, rtol=1e-3, atol=1e-6)


def test_magnitude_is_the_norm_of_each_units_group():
  params = toy.init_params(seed=5)
  p = _np(params)
  want = np.sqrt((p["hidden"]["kernel"] ** 2).sum(0) + p["hidden"]["bias"] ** 2
                 + (p["out"]["kernel"] ** 2).sum(1))
  np.testing.assert_allclose(np.asarray(importance.magnitude(toy.SPEC, params)["hidden"]), want,
                             rtol=1e-6)


@pytest.mark.parametrize("a,b", [([3., 1., 2., 5., 4.], [30., 10., 20., 50., 40.]),
                                 ([1., 2., 2., 3., 0.], [0.5, 0.1, 0.9, 0.3, 0.2]),
                                 ([4., 4., 1., 1., 7., 2.], [1., 2., 3., 4., 5., 6.])])
def test_spearman_matches_scipy_with_ties(a, b):
  want = stats.spearmanr(a, b).statistic
  assert float(importance.spearman(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(want, abs=1e-6)


def test_spread_examples_cover_a_clients_data_evenly_and_each_example_once():
  valid = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1], bool)  # 10 valid slots
  idx, ok = importance.spread_examples(jnp.asarray(valid), 5)
  np.testing.assert_array_equal(np.asarray(idx), np.flatnonzero(valid)[[0, 2, 4, 6, 8]])
  assert np.asarray(ok).all()
  idx, ok = importance.spread_examples(jnp.asarray(valid), 12)  # more asked than there are
  assert np.asarray(ok).sum() == 10
  np.testing.assert_array_equal(np.asarray(idx)[np.asarray(ok)], np.flatnonzero(valid))
  assert valid[np.asarray(idx)].all()  # the padding repeats a valid slot, marked not ok


def test_lowest_score_mask_drops_exactly_the_lowest_scores_per_layer():
  scores = {"a": jnp.asarray([0.5, 0.1, 0.9, 0.3, 0.7, 0.2]), "b": jnp.asarray([2., 1., 3., 4.])}
  masks = invariance.lowest_score_prune_mask(scores, 0.5, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(masks["a"]), [1, 0, 1, 0, 1, 0])  # keeps ceil(3)
  np.testing.assert_array_equal(np.asarray(masks["b"]), [0, 0, 1, 1])
  # Ties: exactly m dropped whatever the key, all among the tied lowest.
  tied = {"a": jnp.asarray([1., 1., 1., 1., 5., 6.])}
  for seed in range(5):
    m = np.asarray(invariance.lowest_score_prune_mask(tied, 0.5, jax.random.key(seed))["a"])
    assert m.sum() == 3 and m[4] == 1 and m[5] == 1
  everything = invariance.lowest_score_prune_mask(scores, 1.0, jax.random.key(0))
  assert all(np.asarray(v).all() for v in everything.values())


def _pruned_round(name):
  method = methods.get_method(name)
  batch_fn = lambda xc, yc, i: (xc[i], yc[i])  # noqa: E731
  train = training.make_trainer(toy.apply_fn, batch_fn, optax.sgd(toy.LR),
                                local.LocalSpec(epochs=1, batch_size=6), loop="host",
                                client_batch=1)
  imp = (methods.make_importance(toy.SPEC, toy.apply_fn, batch_fn, examples=4)
         if method.prune_rule == "taylor_oracle" else None)
  return methods.make_pruned_round(method, toy.SPEC, train, importance_fn=imp)


def _kept(out):
  return np.asarray(out.param_prune_mask["hidden"]["bias"]) > 0.5  # [C, H] the unit masks


def test_magnitude_method_keeps_the_largest_groups_of_w_t():
  params = toy.init_params(seed=7)
  x, y, valid = toy.make_data([6, 6, 3])
  state = methods.init_clip_state(toy.SPEC, 3)
  out = _pruned_round("magnitude")(params, None, state, None, jnp.asarray([1.0, 0.5, 0.75]),
                                   jax.random.split(jax.random.key(1), 3), x, y, valid)
  norm = np.asarray(importance.magnitude(toy.SPEC, params)["hidden"])
  kept = _kept(out)
  assert kept[0].all()
  for c, n_keep in ((1, 4), (2, 6)):
    np.testing.assert_array_equal(np.flatnonzero(kept[c]), np.sort(np.argsort(-norm)[:n_keep]))


def test_taylor_oracle_keeps_the_units_most_important_on_each_clients_first_examples():
  params = toy.init_params(seed=7)
  x, y, valid = toy.make_data([6, 5, 3])
  state = methods.init_clip_state(toy.SPEC, 3)
  out = _pruned_round("taylor")(params, None, state, None, jnp.asarray([0.5, 0.5, 0.5]),
                                jax.random.split(jax.random.key(1), 3), x, y, valid)
  kept = _kept(out)
  for c in range(3):
    n = int(np.sum(valid[c]))  # `examples=4` spread over the valid ones, each once
    chosen = np.flatnonzero(np.asarray(valid[c]))[[i * n // 4 for i in range(4)] if n >= 4
                                                  else list(range(n))]
    score = np.asarray(importance.taylor_importance(
        toy.SPEC, toy.apply_fn, params, x[c][chosen], y[c][chosen], jnp.ones(len(chosen), bool))[
            "hidden"])
    np.testing.assert_array_equal(np.flatnonzero(kept[c]), np.sort(np.argsort(-score)[:4]))
  # Each client's own data decides: two clients with different data keep different units.
  assert (kept[0] != kept[1]).any() or (kept[0] != kept[2]).any()


def test_taylor_needs_its_importance_function():
  train = training.make_trainer(toy.apply_fn, lambda xc, yc, i: (xc[i], yc[i]), optax.sgd(0.1),
                                local.LocalSpec(epochs=1, batch_size=6), loop="host",
                                client_batch=1)
  with pytest.raises(ValueError, match="importance_fn"):
    methods.make_pruned_round(methods.get_method("taylor"), toy.SPEC, train)


@pytest.mark.parametrize("name", ["magnitude", "taylor", "random", "clip_compute"])
def test_fixed_keep_gives_every_straggler_the_same_p_whatever_the_criterion(name):
  for fixed in (0.5, 0.75):
    algo, params, _, _ = toy.make_setting(name, [6, 5, 6, 4, 6], fixed_keep=fixed)
    state, rows = toy.run_rounds(algo, params, 3)
    assert rows[0]["stragglers"] == []  # no times reported yet
    for row in rows[1:]:
      assert row["stragglers"] == [2]
      assert row["keep_fraction"] == [1.0, 1.0, fixed, 1.0, 1.0]


def test_agreement_is_the_spearman_of_each_criterion_with_measured_removal():
  params, prev = toy.init_params(seed=2), toy.init_params(seed=3)
  x, y = _batch(n=6)
  ok = jnp.ones(6, bool)
  got = importance.agreement(toy.SPEC, toy.apply_fn, params, prev, jnp.asarray(x),
                             jnp.asarray(y), ok, jax.random.key(0))
  assert tuple(got) == importance.CRITERIA
  measured = np.asarray(importance.removal_importance(toy.SPEC, toy.apply_fn, params,
                                                      jnp.asarray(x), jnp.asarray(y), ok)["hidden"])
  norm = np.asarray(importance.magnitude(toy.SPEC, params)["hidden"])
  assert float(got["magnitude"]["hidden"]) == pytest.approx(
      stats.spearmanr(norm, measured).statistic, abs=1e-5)
  assert float(got["ordered"]["hidden"]) == pytest.approx(
      stats.spearmanr(-np.arange(H), measured).statistic, abs=1e-5)


def test_threshold_scale_moves_the_invariant_set_not_the_band_controller():
  scores = {"l": jnp.asarray([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])}
  state = invariance.init_state({"l": 8})
  state = state.replace(thresholds={"l": jnp.float32(0.35)}, initialised=jnp.asarray(True))
  out = {}
  for scale in (0.5, 1.0, 2.0):
    _, new, counts = invariance.update(state, scores, 0.5, jax.random.key(0),
                                       threshold_scale=scale)
    out[scale] = (int(counts.invariant["l"]), float(new.thresholds["l"]))
  # invariant: score <= 0.35 x scale -> 1, 3, 7 units
  assert [out[s][0] for s in (0.5, 1.0, 2.0)] == [1, 3, 7]
  # the controller saw 3 < m = 4 invariant units at the band value: th x 1.2 in every case
  assert all(v[1] == pytest.approx(0.42) for v in out.values())
  with pytest.raises(ValueError, match="threshold_scale"):
    invariance.update(state, scores, 0.5, jax.random.key(0), threshold_scale=0.0)
