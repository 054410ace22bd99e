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
  for k, n in SIZES.items():
    inv, slk = np.asarray(counts.invariant[k]), np.asarray(counts.slack[k])
    dropped, dropped_inv = np.asarray(counts.dropped[k]), np.asarray(counts.dropped_invariant[k])
    np.testing.assert_array_equal(n - np.asarray(masks[k].sum(-1)), dropped)
    np.testing.assert_array_equal(dropped_inv + slk, dropped)
    np.testing.assert_array_equal(inv[dropped == 0], 0)  # the p = 1 client reports nothing
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
    m, _, c = invariance.update(st, slack_scores, 0.5, jax.random.key(seed), threshold_init="min")
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
    # m = 3: (a) plus the lowest-score unit of (b) {2: 0.2, 3: 0.3}, whatever the key; (a) goes
    # first although unit 1 (0.4) scores above both (b) units.
    m, _, c = invariance.update(state, scores, 0.7, key)
    np.testing.assert_array_equal(np.asarray(m["l"]), [0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    assert int(c.dropped_invariant["l"]) == 3 and int(c.slack["l"]) == 0
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
  m, s2, c = invariance.update(s1, scores, 0.4, jax.random.key(0), growth=2.0,
                               threshold_init="min")
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
  # th = max = 0.8: all 5 invariant > 2 m = 2, so the next threshold shrinks to 0.8 / 1.2.
  assert int(c_fn.invariant["l"]) == 5 and float(s_fn.thresholds["l"]) == pytest.approx(0.8 / 1.2)


def test_zero_threshold_recovers_on_growth():
  state = _state_with(0.0, np.ones(4))
  scores = {"l": jnp.asarray([0.5, 0.25, 1.0, 2.0], jnp.float32)}
  _, s, _ = invariance.update(state, scores, 0.5, jax.random.key(0))
  assert float(s.thresholds["l"]) == pytest.approx(0.25)


# Ten units with scores 0.1, ..., 1.0 (shuffled), p = 0.8: m = 2, band [m, 2 m] = [2, 4].
BAND_SCORES = {"l": jnp.asarray([0.7, 0.1, 1.0, 0.4, 0.2, 0.9, 0.5, 0.3, 0.8, 0.6], jnp.float32)}


@pytest.mark.parametrize("th, invariant, next_th", [
    (0.01, 0, 0.1),     # 0 < m: grow, 0.01 * 2 lifted to the smallest positive score 0.1
    (0.15, 1, 0.3),     # 1 < m: grow, 0.15 * 2
    (0.25, 2, 0.25),    # = m: unchanged
    (0.35, 3, 0.35),    # in (m, 2 m): unchanged
    (0.45, 4, 0.45),    # = 2 m: unchanged
    (0.55, 5, 0.275),   # 5 > 2 m: shrink, 0.55 / 2
    (0.75, 7, 0.375),   # 7 > 2 m: shrink, 0.75 / 2
    (0.6, 6, 0.3),      # the score equal to th counts as invariant (<=)
])
def test_threshold_band_rule(th, invariant, next_th):
  # This round's mask and count use th; the rule sets the next round's threshold.
  state = _state_with(th, np.ones(10))
  m, new, c = invariance.update(state, BAND_SCORES, 0.8, jax.random.key(0), growth=2.0)
  assert int(c.invariant["l"]) == invariant and int(c.dropped["l"]) == 2
  assert int(c.dropped_invariant["l"]) == min(invariant, 2)
  assert int(c.slack["l"]) == max(2 - invariant, 0)
  assert int(m["l"].sum()) == 8
  np.testing.assert_allclose(float(new.thresholds["l"]), next_th, rtol=1e-6)


def test_threshold_frozen_and_counts_zero_where_nothing_is_dropped():
  # p = 1: m = 0 in every layer. 7 units invariant > 2 * 0, yet th stays (no shrink).
  state = _state_with(0.75, np.ones(10))
  m, new, c = invariance.update(state, BAND_SCORES, 1.0, jax.random.key(0), growth=2.0)
  assert float(new.thresholds["l"]) == pytest.approx(0.75)
  assert np.asarray(m["l"]).all()
  assert int(c.invariant["l"]) == int(c.slack["l"]) == int(c.dropped_invariant["l"]) == 0
  # Ten rounds at p = 1 do not move it either.
  step = jax.jit(lambda s: invariance.update(s, BAND_SCORES, 1.0, jax.random.key(0))[1])
  for _ in range(10):
    new = step(new)
  assert float(new.thresholds["l"]) == pytest.approx(0.75)
  # A layer with m_l = 0 inside a pruning client: n = 2, p = 0.8 keeps ceil(1.6) = 2. Its th
  # stays (0 invariant would grow it, 2 > 2 * 0 would shrink it) and its counts are 0.
  state = invariance.InvarianceState(
      thresholds={"big": jnp.asarray(0.35, jnp.float32), "tiny": jnp.asarray(0.5, jnp.float32),
                  "tiny_low": jnp.asarray(0.01, jnp.float32)},
      initialised=jnp.asarray(True),
      last_prune_mask={"big": jnp.ones(10), "tiny": jnp.ones(2), "tiny_low": jnp.ones(2)})
  scores = {"big": BAND_SCORES["l"], "tiny": jnp.asarray([0.1, 0.2], jnp.float32),
            "tiny_low": jnp.asarray([0.1, 0.2], jnp.float32)}
  m, new, c = invariance.update(state, scores, 0.8, jax.random.key(0), growth=2.0)
  assert int(c.dropped["big"]) == 2 and int(c.invariant["big"]) == 3
  for k, th in (("tiny", 0.5), ("tiny_low", 0.01)):
    assert float(new.thresholds[k]) == pytest.approx(th)
    assert int(c.dropped[k]) == int(c.invariant[k]) == int(c.slack[k]) == 0
    np.testing.assert_array_equal(np.asarray(m[k]), [1, 1])


def test_most_invariant_first_inside_the_invariant_group():
  # th = 0.65: units with scores 0.1 ... 0.6 (6 units) are invariant. m = 3 drops the three
  # lowest scores 0.1, 0.2, 0.3 (units 1, 4, 7) for every key, not 3 random invariant units.
  state = _state_with(0.65, np.ones(10))
  for seed in range(8):
    m, _, c = invariance.update(state, BAND_SCORES, 0.7, jax.random.key(seed))
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(m["l"]) == 0), [1, 4, 7])
    assert int(c.invariant["l"]) == 6 and int(c.dropped_invariant["l"]) == 3
  # The same inside group (a): all 10 units were dropped last round and all are invariant.
  state = _state_with(1.0, np.zeros(10))
  for slack in invariance.SLACK_ORDERS:
    m, _, _ = invariance.update(state, BAND_SCORES, 0.7, jax.random.key(1), slack=slack)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(m["l"]) == 0), [1, 4, 7])


def test_threshold_recovers_from_underflow_and_never_explodes():
  scores = {"l": jnp.asarray([0.5, 0.25, 1.0, 2.0], jnp.float32)}
  # Far below the smallest positive score (as after many shrinks): back to it in one round.
  _, s, _ = invariance.update(_state_with(1e-30, np.ones(4)), scores, 0.5, jax.random.key(0))
  assert float(s.thresholds["l"]) == pytest.approx(0.25)
  # Many zero scores (> 2 m): th shrinks to 0 (underflow), the zeros stay invariant and
  # dropped; once they move, the first round with too few invariant units restores th.
  zeros = {"l": jnp.asarray([0.0] * 5 + [0.5, 0.25, 1.0], jnp.float32)}
  m, s, c = invariance.update(_state_with(0.0, np.ones(8)), zeros, 0.75, jax.random.key(0))
  assert float(s.thresholds["l"]) == 0.0 and int(c.invariant["l"]) == 5
  assert np.asarray(m["l"])[:5].sum() == 3
  moved = {"l": jnp.asarray([0.3, 0.4, 0.6, 0.7, 0.8, 0.5, 0.25, 1.0], jnp.float32)}
  _, s, c = invariance.update(s, moved, 0.75, jax.random.key(0))
  assert int(c.invariant["l"]) == 0 and float(s.thresholds["l"]) == pytest.approx(0.25)
  # Non-finite scores: growth stops at the largest finite score instead of running to inf.
  nan_scores = {"l": jnp.asarray([np.nan] * 6 + [0.1, 0.2], jnp.float32)}
  step = jax.jit(lambda st: invariance.update(st, nan_scores, 0.5, jax.random.key(0))[1])
  s = _state_with(0.15, np.ones(8))
  for _ in range(30):
    s = step(s)
  assert float(s.thresholds["l"]) == pytest.approx(0.2)
  all_nan = {"l": jnp.full((8,), np.nan, jnp.float32)}
  _, s, _ = invariance.update(_state_with(0.15, np.ones(8)), all_nan, 0.5, jax.random.key(0))
  assert float(s.thresholds["l"]) == pytest.approx(0.15)
  # A non-finite initial threshold (custom init) is reset to 0, then recovers.
  _, s, _ = invariance.update(invariance.init_state({"l": 4}), scores, 0.5, jax.random.key(0),
                              threshold_init=lambda x: jnp.asarray(jnp.inf, jnp.float32))
  assert float(s.thresholds["l"]) == 0.0


@pytest.mark.parametrize("decay, growth, rounds", [(0.5, 2.5, 12), (0.9, 1.2, 40)])
def test_band_tracks_converging_scores(decay, growth, rounds):
  # Scores shrink by `decay` each round, as when the model converges: 100 units log-spaced over
  # two decades (shuffled), p = 0.8 so m = 20. The grow-only threshold ends up calling every
  # unit invariant; the band rule keeps the count near [m, 2 m] (a round in the band without a
  # change lets the scores slide by log(1/decay) / log(10^0.02) ranks: 15 for 0.5, 2.3 for 0.9).
  n, m = 100, 20
  base = 10.0 ** (-2.0 * np.random.default_rng(0).permutation(n) / n)
  step = jax.jit(lambda st, sc, k: invariance.update(st, {"l": sc}, 0.8, k, growth=growth))
  state = invariance.init_state({"l": n})
  reached, counts = False, []
  for t in range(rounds):
    scores = base * decay ** t
    prune_mask, state, c = step(state, jnp.asarray(scores, jnp.float32), jax.random.key(t))
    count = int(c.invariant["l"])
    counts.append(count)
    reached = reached or count >= m
    if reached:
      assert m <= count <= 2 * m + 15, counts
      # The dropped units are the m lowest scores.
      np.testing.assert_array_equal(np.flatnonzero(np.asarray(prune_mask["l"]) == 0),
                                    np.sort(np.argsort(scores)[:m]))
    th = float(state.thresholds["l"])
    assert 0 < th <= scores.max(), (t, th)
  assert reached, counts


def test_p_one_gives_all_ones_for_every_masker():
  # An initialised client whose threshold calls about half the units invariant.
  state = invariance.init_state(SIZES).replace(
      initialised=jnp.asarray(True), thresholds={k: jnp.asarray(0.5, jnp.float32) for k in SIZES})
  masks, _, counts = invariance.update(state, _scores(1), 1.0, jax.random.key(0))
  rnd = invariance.random_prune_mask(SIZES, 1.0, jax.random.key(0))
  ordered = invariance.ordered_prune_mask(SIZES, 1.0)
  for k, n in SIZES.items():
    for got in (masks[k], rnd[k], ordered[k]):
      assert got.dtype == jnp.float32
      np.testing.assert_array_equal(np.asarray(got), np.ones(n))
    assert int(counts.slack[k]) == int(counts.invariant[k]) == 0
    assert int(counts.dropped[k]) == int(counts.dropped_invariant[k]) == 0


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
  with pytest.raises(ValueError, match="growth"):
    invariance.update(state, _scores(0), 0.5, jax.random.key(0), growth=1.0)
  with pytest.raises(ValueError, match="do not match"):
    invariance.update(state, {"conv1": jnp.zeros(32)}, 0.5, jax.random.key(0))
  with pytest.raises(ValueError, match="positive int"):
    invariance.init_state({"l": 0})


def test_band_init_puts_the_first_invariant_count_mid_band():
  state = invariance.init_state({"a": 10})
  scores = {"a": jnp.arange(1, 11, dtype=jnp.float32)[::-1] / 10}  # 1.0 .. 0.1
  mask, new, counts = invariance.update(state, scores, 0.6, jax.random.key(0),
                                        threshold_init="band")
  # m = 4 units to drop; th = the ceil(1.5 * 4) = 6th lowest score, 0.6: 6 units invariant.
  assert float(new.thresholds["a"]) == pytest.approx(0.6)
  assert int(counts.invariant["a"]) == 6 and int(counts.slack["a"]) == 0
  np.testing.assert_array_equal(np.flatnonzero(np.asarray(mask["a"]) == 0), [6, 7, 8, 9])
