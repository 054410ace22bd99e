"""The round algorithm on a tiny MLP, against hand-computed SGD, masks, means and clock."""

import jax
import numpy as np
import pytest

from clipjax.clip import invariance
from clipjax.clock import round_time
from tests.toy import F, H, K, hand_delta, make_setting

def _assert_tree_close(got, want, **kw):
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), w, **kw)


def test_fedavg_plain_round_is_the_weighted_mean_of_hand_computed_sgd_steps():
  counts = [5, 3]
  algo, params, (x, y), population = make_setting("fedavg", counts)
  state, row = algo.apply(algo.init(params), 0)
  deltas, losses = zip(*[hand_delta(params, x[c, :n], y[c, :n], np.ones(H))
                         for c, n in enumerate(counts)])
  mean = jax.tree.map(lambda a, b: (5 * a + 3 * b) / 8, *deltas)
  _assert_tree_close(state.server.params, jax.tree.map(lambda p, d: np.asarray(p) + d, params, mean),
                     rtol=1e-5, atol=1e-6)
  _assert_tree_close(state.server.prev_params, params, rtol=0, atol=0)
  assert row["train_loss"] == pytest.approx(sum(losses) / 8, rel=1e-5)
  # Clock by hand: fedavg in the clear sends the model down and the update up, 2 messages.
  d = 4 * H + H + H * K + K
  prof = population.profile
  fit = 6.0 * (F * H + H * K) * np.asarray(counts) / prof.flops_per_s
  total = (8 * 4 * d / prof.downlink_bps + fit + 8 * 4 * (d + 1) / prof.uplink_bps
           + 2 * prof.latency_s)
  np.testing.assert_allclose(row["client_time_s"], total, rtol=1e-7)
  assert row["messages"] == [2, 2] and row["mask_s"] == [0.0, 0.0]
  assert row["round_time_s"] == pytest.approx(total.max() + 0.125)
  assert round_time.recompute_round_time(row) == pytest.approx(row["round_time_s"], abs=1e-8)
  assert row["stragglers"] == [] and row["invariant_units"] == [0, 0]


@pytest.mark.parametrize("rule", ["padded", "participation_weighted"])
def test_ordered_round_two_prunes_the_last_units_and_averages_by_rule(rule):
  counts = [6, 6, 6, 6, 6]
  algo, params, (x, y), population = make_setting("ordered", counts, rule=rule)
  state, row1 = algo.apply(algo.init(params), 0)
  assert row1["keep_fraction"] == [1.0] * 5 and row1["messages"] == [2] * 5  # no broadcast yet
  start = state.server.params
  state, row2 = algo.apply(state, 1)
  slow = int(np.flatnonzero(population.compute_slow)[0])
  assert row2["stragglers"] == [slow]
  p = row2["keep_fraction"][slow]
  assert p < 1.0 and row2["messages"] == [4] * 5     # keys for the broadcast, the broadcast
  kept = int(invariance.kept_units(H, p))
  masks = [np.ones(H) if c != slow else (np.arange(H) < kept).astype(float) for c in range(5)]
  deltas = [hand_delta(start, x[c], y[c], masks[c])[0] for c in range(5)]
  if rule == "padded":
    mean = jax.tree.map(lambda *d: sum(d) / 5, *deltas)
  else:  # every coordinate over the clients that trained it
    pmask = lambda m: {"hidden": {"kernel": np.broadcast_to(m, (F, H)), "bias": m},  # noqa: E731
                       "out": {"kernel": np.broadcast_to(m[:, None], (H, K)), "bias": np.ones(K)}}
    num = jax.tree.map(lambda *d: sum(d), *deltas)
    den = jax.tree.map(lambda *m: sum(m), *[pmask(m) for m in masks])
    mean = jax.tree.map(lambda a, b: a / b, num, den)
  want = jax.tree.map(lambda s, d: np.asarray(s) + d, start, mean)
  _assert_tree_close(state.server.params, want, rtol=1e-5, atol=1e-6)
  fit_kept = 6.0 * (F * kept + kept * K) * 6
  assert row2["fit_s"][slow] == pytest.approx(fit_kept / population.profile.flops_per_s[slow])
  assert round_time.recompute_round_time(row2) == pytest.approx(row2["round_time_s"], abs=1e-8)


def test_secure_round_equals_the_plain_round_to_quantisation_and_pays_the_protocol():
  counts = [4, 6, 5]
  plain, params, _, _ = make_setting("fedavg", counts, compute_slow=0)
  secure, _, _, _ = make_setting("fedavg", counts, secure=True, compute_slow=0)
  want, prow = plain.apply(plain.init(params), 0)
  got, srow = secure.apply(secure.init(params), 0)
  _assert_tree_close(got.server.params, jax.tree.leaves(want.server.params), atol=2e-3)
  assert srow["messages"] == [5, 5, 5] and all(m > 0 for m in srow["mask_s"])
  assert srow["secagg_survivors"] == 3
  assert srow["round_time_s"] > prow["round_time_s"]


def test_aborted_round_changes_nothing_but_the_clock():
  # A drop-out rate of 0.99 leaves fewer than t = 3 of 3 clients at some stage: the round aborts.
  algo, params, _, _ = make_setting("fedavg", [4, 6, 5], secure=True, compute_slow=0,
                                    dropout_rate=0.99)
  state, row = algo.apply(algo.init(params), 0)
  assert "aborted" in row and row["round_time_s"] > 0 and row["train_loss"] != row["train_loss"]
  _assert_tree_close(state.server.params, jax.tree.leaves(params), atol=0)
  assert state.virtual_time == pytest.approx(row["round_time_s"])
