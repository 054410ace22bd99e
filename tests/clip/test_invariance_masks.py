"""Invariant-dropout prune masks: exact counts, ties, drop order, threshold state, baselines."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.clip import invariance

SIZES = {"conv1": 32, "conv2": 7, "dense": 10}


def _scores(seed, sizes=SIZES):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.uniform(0.0, 1.0, n), jnp.float32) for k, n in sizes.items()}


PS = (0.0, 0.05, 0.1, 0.3, 0.5, 0.55, 0.6, 0.7, 0.75, 0.9, 0.95, 0.99, 1.0)


NS = (1, 2, 3, 7, 10, 20, 32, 64, 100, 256, 4096)


def test_exact_drop_counts():
  # Every layer size at once (one layer per n), every p at once (vmap).
  sizes = {f"l{n:05d}": n for n in NS}
  ps = jnp.asarray(PS, jnp.float32)
  state = invariance.init_state(sizes)
  rng = np.random.default_rng(0)
  scores = {k: jnp.asarray(rng.uniform(size=n), jnp.float32) for k, n in sizes.items()}
  keys = jax.random.split(jax.random.key(3), len(PS))
  prune_mask, _, counts = jax.jit(jax.vmap(invariance.update, in_axes=(None, None, 0, 0)))(
      state, scores, ps, keys)
  rnd = jax.jit(jax.vmap(lambda p, k: invariance.random_prune_mask(sizes, p, k)))(ps, keys)
  ordered = jax.jit(jax.vmap(lambda p: invariance.ordered_prune_mask(sizes, p)))(ps)
  for k, n in sizes.items():
    # Exact decimal oracle: ceil(p n) with p a short decimal, without float error.
    expected_kept = np.asarray([-(-round(p * 100) * n // 100) for p in PS])
    np.testing.assert_array_equal(np.asarray(prune_mask[k].sum(-1)), expected_kept)
    np.testing.assert_array_equal(np.asarray(counts.dropped[k]), n - expected_kept)
    np.testing.assert_array_equal(np.asarray(rnd[k].sum(-1)), expected_kept)
    np.testing.assert_array_equal(np.asarray(ordered[k].sum(-1)), expected_kept)
    # float64 p from the host, outside any transform.
    np.testing.assert_array_equal(np.asarray(invariance.kept_units(n, np.asarray(PS))),
                                  expected_kept)


def test_exact_unit_grid_points_round_trip():
  for n in (3, 7, 10, 96, 256, 4096):
    ks = np.arange(n + 1)
    np.testing.assert_array_equal(np.asarray(invariance.kept_units(n, ks / n)), ks)


def test_traced_p_under_jit_and_vmap_over_clients():
  ps = jnp.asarray([1.0, 0.5, 0.7, 0.55, 0.95], jnp.float32)
  c = ps.shape[0]
  states = invariance.replicate_state(invariance.init_state(SIZES), c)
  keys = jax.random.split(jax.random.key(0), c)
  scores = _scores(0)  # shared by all clients

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(states, p, keys):
    return jax.vmap(invariance.update, in_axes=(0, None, 0, 0))(states, scores, p, keys)

  masks, new_states, counts = step(states, ps, keys)
  for k, n in SIZES.items():
    expected = [math.ceil(round(float(p) * 100) * n / 100) for p in ps]
    np.testing.assert_array_equal(np.asarray(masks[k].sum(-1)), expected)
    chex.assert_shape(masks[k], (c, n))
  np.testing.assert_array_equal(np.asarray(new_states.initialised), [False, True, True, True, True])
  # A second round with other p values reuses the compiled function.
  masks2, _, _ = step(new_states, ps[::-1], keys)
  assert int(masks2["conv1"][0].sum()) == math.ceil(0.95 * 32)

  # vmap equals a loop over clients (two of them, to keep the suite fast).
  for i in (1, 2):
    state_i = jax.tree.map(lambda x: x[i], states)
    m_i, _, _ = invariance.update(state_i, scores, ps[i], keys[i])
    for k in SIZES:
      np.testing.assert_array_equal(np.asarray(m_i[k]), np.asarray(masks[k][i]))


def test_per_client_scores_vmap():
  c = 3
  scores = jax.tree.map(lambda *x: jnp.stack(x), *[_scores(s) for s in range(c)])
  states = invariance.replicate_state(invariance.init_state(SIZES), c)
  masks, _, _ = jax.jit(jax.vmap(invariance.update))(states, scores, jnp.full((c,), 0.6),
                                            jax.random.split(jax.random.key(1), c))
  for k, n in SIZES.items():
    np.testing.assert_array_equal(np.asarray(masks[k].sum(-1)), [math.ceil(0.6 * n)] * c)


def test_ties_exact_counts_and_deterministic_per_key():
  n = 50
  state = invariance.init_state({"l": n})
  scores = {"l": jnp.full((n,), 0.25, jnp.float32)}  # every unit ties
  m_a, _, c_a = invariance.update(state, scores, 0.5, jax.random.key(7))
  m_b, _, _ = invariance.update(state, scores, 0.5, jax.random.key(7))
  m_c, _, _ = invariance.update(state, scores, 0.5, jax.random.key(8))
  assert int(m_a["l"].sum()) == 25 and int(c_a.invariant["l"]) == n
  np.testing.assert_array_equal(np.asarray(m_a["l"]), np.asarray(m_b["l"]))
  assert not np.array_equal(np.asarray(m_a["l"]), np.asarray(m_c["l"]))
  # Ties among slack scores too: a partial tie group is split exactly.
  # Threshold = min positive score 0.1: unit 0 invariant, 9 slack units from the 12-way tie.
  slack_scores = {"l": jnp.asarray([0.1] + [0.5] * 12 + [0.9] * 7, jnp.float32)}
  st = invariance.init_state({"l": 20})
  splits = set()
  for seed in range(5):
    m, _, c = invariance.update(st, slack_scores, 0.5, jax.random.key(seed))
    got = np.asarray(m["l"])
    assert got.sum() == 10 and got[0] == 0 and got[13:].all() and got[1:13].sum() == 3
    assert int(c.invariant["l"]) == 1 and int(c.slack["l"]) == 9
    splits.add(tuple(got))
  assert len(splits) > 1


def _state_with(thresholds, last_kept):
  return invariance.InvarianceState(
      thresholds={"l": jnp.asarray(thresholds, jnp.float32)},
      initialised=jnp.asarray(True),
      last_prune_mask={"l": jnp.asarray(last_kept, jnp.float32)})


def test_priority_a_then_b_then_c():
  # Units 0-3 invariant (score <= 0.5); 0 and 1 were dropped last round; 4-9 not invariant.
  scores = {"l": jnp.asarray([0.1, 0.4, 0.2, 0.3, 0.9, 0.6, 0.8, 0.7, 0.95, 0.65], jnp.float32)}
  last = [0, 0, 1, 1, 1, 1, 1, 1, 0, 1]  # unit 8 was dropped but is not invariant
  state = _state_with(0.5, last)
  for seed in range(8):
    key = jax.random.key(seed)
    # m = 2: exactly the (a) units 0 and 1, whatever the key.
    m, _, c = invariance.update(state, scores, 0.8, key)
    np.testing.assert_array_equal(np.asarray(m["l"]), [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    assert int(c.slack["l"]) == 0 and int(c.invariant["l"]) == 4
    # m = 3: (a) plus one of (b) {2, 3}, chosen by the key.
    m, _, _ = invariance.update(state, scores, 0.7, key)
    got = np.asarray(m["l"])
    assert got[:2].sum() == 0 and got[2:4].sum() == 1 and got[4:].all()
    # m = 6: all invariant, then slack by ascending score: 0.6 (unit 5), 0.65 (unit 9).
    m, _, c = invariance.update(state, scores, 0.4, key)
    np.testing.assert_array_equal(np.asarray(m["l"]), [0, 0, 0, 0, 1, 0, 1, 1, 1, 0])
    assert int(c.slack["l"]) == 2


def test_previous_round_preference_keeps_submodel_stable():
  # 20 tied invariant units; with m fixed, round 2 drops exactly round 1's units.
  n = 20
  scores = {"l": jnp.zeros((n,), jnp.float32)}
  state = invariance.init_state({"l": n})
  m1, state, _ = invariance.update(state, scores, 0.6, jax.random.key(1))
  m2, state, _ = invariance.update(state, scores, 0.6, jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(m1["l"]), np.asarray(m2["l"]))
  # With more to drop, the old set stays dropped and the rest comes from (b).
  m3, _, _ = invariance.update(state, scores, 0.5, jax.random.key(3))
  assert np.all(np.asarray(m3["l"])[np.asarray(m2["l"]) == 0] == 0)
  assert int(m3["l"].sum()) == 10


def test_slack_random_vs_lowest_score():
  n = 40
  scores = {"l": jnp.asarray(np.linspace(1.0, 2.0, n), jnp.float32)}
  state = _state_with(0.5, np.ones(n))  # nothing invariant: all drops are slack
  lowest, _, c = invariance.update(state, scores, 0.75, jax.random.key(0), slack="lowest_score")
  np.testing.assert_array_equal(np.asarray(lowest["l"]), (np.arange(n) >= 10).astype(np.float32))
  assert int(c.slack["l"]) == 10 and int(c.invariant["l"]) == 0
  r0, _, c0 = invariance.update(state, scores, 0.75, jax.random.key(0), slack="random")
  r0b, _, _ = invariance.update(state, scores, 0.75, jax.random.key(0), slack="random")
  r1, _, _ = invariance.update(state, scores, 0.75, jax.random.key(1), slack="random")
  assert int(r0["l"].sum()) == int(r1["l"].sum()) == 30 and int(c0.slack["l"]) == 10
  np.testing.assert_array_equal(np.asarray(r0["l"]), np.asarray(r0b["l"]))
  assert not np.array_equal(np.asarray(r0["l"]), np.asarray(r1["l"]))
  assert not np.array_equal(np.asarray(r0["l"]), np.asarray(lowest["l"]))


def test_threshold_init_and_growth():
  scores = {"l": jnp.asarray([0.0, 0.2, 0.3, 0.5, 0.8], jnp.float32)}
  state = invariance.init_state({"l": 5})
  # p = 1: no pruning, no initialisation, no growth.
  m, s1, c = invariance.update(state, scores, 1.0, jax.random.key(0))
  assert not bool(s1.initialised) and float(s1.thresholds["l"]) == 0.0
  assert np.asarray(m["l"]).all() and int(c.dropped["l"]) == 0
  # First pruning round: th = min positive score 0.2, 2 invariant (0.0, 0.2) < m = 3: grow.
  m, s2, c = invariance.update(s1, scores, 0.4, jax.random.key(0), growth=2.0)
  assert bool(s2.initialised)
  assert int(c.invariant["l"]) == 2 and int(c.slack["l"]) == 1
  np.testing.assert_allclose(float(s2.thresholds["l"]), 0.4)
  np.testing.assert_array_equal(np.asarray(m["l"]), [0, 0, 0, 1, 1])
  # Next round: th = 0.4 covers 3 units = m, so no growth.
  _, s3, c = invariance.update(s2, scores, 0.4, jax.random.key(0), growth=2.0)
  assert int(c.invariant["l"]) == 3 and int(c.slack["l"]) == 0
  np.testing.assert_allclose(float(s3.thresholds["l"]), 0.4)
  # Other init rules.
  _, s_med, _ = invariance.update(state, scores, 0.4, jax.random.key(0), threshold_init="median")
  np.testing.assert_allclose(float(s_med.thresholds["l"]), 0.3)
  _, s_fn, c_fn = invariance.update(state, scores, 0.8, jax.random.key(0),
                                    threshold_init=lambda s: jnp.max(s))
  assert int(c_fn.invariant["l"]) == 5 and float(s_fn.thresholds["l"]) == pytest.approx(0.8)


def test_zero_threshold_recovers_on_growth():
  state = _state_with(0.0, np.ones(4))
  scores = {"l": jnp.asarray([0.5, 0.25, 1.0, 2.0], jnp.float32)}
  _, s, _ = invariance.update(state, scores, 0.5, jax.random.key(0))
  assert float(s.thresholds["l"]) == pytest.approx(0.25)


def test_p_one_gives_all_ones_for_every_masker():
  state = invariance.init_state(SIZES)
  masks, _, counts = invariance.update(state, _scores(1), 1.0, jax.random.key(0))
  rnd = invariance.random_prune_mask(SIZES, 1.0, jax.random.key(0))
  ordered = invariance.ordered_prune_mask(SIZES, 1.0)
  for k, n in SIZES.items():
    for got in (masks[k], rnd[k], ordered[k]):
      assert got.dtype == jnp.float32
      np.testing.assert_array_equal(np.asarray(got), np.ones(n))
    assert int(counts.slack[k]) == 0


def test_baselines_structure():
  ordered = invariance.ordered_prune_mask({"l": 10}, 0.7)
  np.testing.assert_array_equal(np.asarray(ordered["l"]), [1] * 7 + [0] * 3)
  a = invariance.random_prune_mask(SIZES, 0.5, jax.random.key(0))
  b = invariance.random_prune_mask(SIZES, 0.5, jax.random.key(0))
  d = invariance.random_prune_mask(SIZES, 0.5, jax.random.key(1))
  assert all(np.array_equal(a[k], b[k]) for k in SIZES)
  assert not np.array_equal(np.asarray(a["conv1"]), np.asarray(d["conv1"]))
  ps = jnp.asarray([0.5, 0.75, 1.0])
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.jit(jax.vmap(lambda p, k: invariance.random_prune_mask(SIZES, p, k)))(ps, keys)
  np.testing.assert_array_equal(np.asarray(batched["conv1"].sum(-1)), [16, 24, 32])
  ordered_b = jax.vmap(lambda p: invariance.ordered_prune_mask(SIZES, p))(ps)
  np.testing.assert_array_equal(np.asarray(ordered_b["dense"].sum(-1)), [5, 8, 10])


def test_bad_input():
  state = invariance.init_state(SIZES)
  with pytest.raises(ValueError, match="slack"):
    invariance.update(state, _scores(0), 0.5, jax.random.key(0), slack="largest")
  with pytest.raises(ValueError, match="threshold_init"):
    invariance.update(state, _scores(0), 0.5, jax.random.key(0), threshold_init="max")
  with pytest.raises(ValueError, match="do not match"):
    invariance.update(state, {"conv1": jnp.zeros(32)}, 0.5, jax.random.key(0))
  with pytest.raises(ValueError, match="positive int"):
    invariance.init_state({"l": 0})
