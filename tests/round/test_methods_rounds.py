"""Whole rounds of the pruning methods on the toy MLP, against values derived by hand: who is the
straggler and its keep fraction from round 1's recorded times, which units it drops, and the
global model from hand-computed SGD steps with those units masked.

The toy (`tests.toy`): 5 clients, one hidden layer of H = 8 units, one full-batch SGD step per
round, server SGD with rate 1. Its FLOP table keeps ceil(8 p) units and runs the fraction
ceil(8 p) / 8 of the FLOPs, on the grid p in {0.5, 0.625, 0.75, 0.875, 1} (p_min 0.5).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import fluid as fluid_lib
from clipjax import secagg
from clipjax.clip import keep as keep_lib
from clipjax.clip import stragglers
from clipjax.clock import devices
from clipjax.round import settings
from tests.toy import F, H, K, SPEC, hand_delta, make_setting, run_rounds

COUNTS = [6, 6, 5, 6, 6]        # the slow client (population seed 0: client 2) holds 5
D = F * H + H + H * K + K       # 67 parameters
GRID = np.array([0.5, 0.625, 0.75, 0.875, 1.0])
FRACTION = 0.2                   # make_setting's straggler fraction




def _leaves(tree):
  return [np.asarray(a, np.float64) for a in jax.tree.leaves(tree)]


def _assert_tree_close(got, want, **kw):
  for g, w in zip(_leaves(got), _leaves(want)):
    np.testing.assert_allclose(g, w, **kw)


def _np(params):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


def _hand_keep(row1, rule):
  """Round 2's stragglers and keep fractions from round 1's recorded times (DESIGN 2.2-2.3).

  Every client knows every other's report (SecAgg's complete graph, or FLuID's server):
  T* = quantile(fit + net, 1 - f) and F* = quantile(fit, 1 - f) (type 7, NumPy's default)
  over the same 5 values for everybody; a client is a straggler iff its T > T*, and may run
  rho = F* / fit (clip_compute) or (T* - net) / fit (clip_network) of its FLOPs, clipped to
  [0.5, 1]; it keeps the largest grid p whose FLOP fraction p is <= rho.
  """
  fit = np.asarray(row1["fit_s"])                   # round 1: everybody trained the full model
  net = np.asarray(row1["client_time_s"]) - fit     # all that pruning cannot shrink
  total = fit + net
  t_star, f_star = np.quantile(total, 1 - FRACTION), np.quantile(fit, 1 - FRACTION)
  straggler = total > t_star
  budget = f_star if rule == "clip_compute" else t_star - net
  rho = np.where(straggler, np.clip(budget / fit, 0.5, 1.0), 1.0)
  p = np.array([GRID[GRID <= r + 1e-9].max() for r in rho])
  # Far from every grid step: float32 in the code cannot pick another p.
  steps = np.abs(rho[straggler, None] - GRID[None])
  assert (steps[rho[straggler] < 1] > 1e-3).all()
  return straggler, p, rho, t_star, f_star, fit, net


def _kept(p):
  return int(np.ceil(H * p - 1e-9))


def _unit_scores(now, prev):
  """CLIP's `max_relative` score by hand (the toy's): a unit's largest |w_now - w_prev| / (|w_prev| + 1e-8) over
  its incoming kernel column, its bias and its outgoing kernel row."""
  rel = jax.tree.map(lambda a, b: np.abs(a - b) / (np.abs(b) + 1e-8), _np(now), _np(prev))
  return np.max(np.stack([rel["hidden"]["kernel"].max(0), rel["hidden"]["bias"],
                          rel["out"]["kernel"].max(1)]), axis=0)


def _param_mask(units):
  return {"hidden": {"kernel": np.broadcast_to(units, (F, H)), "bias": units},
          "out": {"kernel": np.broadcast_to(units[:, None], (H, K)), "bias": np.ones(K)}}


def _hand_step(start, x, y, counts, masks, rule):
  """The new global model from every client's hand-computed step, and the round's loss."""
  deltas, losses = zip(*[hand_delta(start, x[c, :n], y[c, :n], masks[c])
                         for c, n in enumerate(counts)])
  w = np.asarray(counts, np.float64)
  num = jax.tree.map(lambda *d: sum(wc * dc for wc, dc in zip(w, d)), *deltas)
  if rule == "padded":   # a pruned coordinate counts as a zero in the weighted mean
    mean = jax.tree.map(lambda a: a / w.sum(), num)
  else:                  # each coordinate over the (weighted) clients that trained it
    den = jax.tree.map(lambda *m: sum(wc * mc for wc, mc in zip(w, m)),
                       *[_param_mask(m) for m in masks])
    mean = jax.tree.map(lambda a, b: a / b, num, den)
  new = jax.tree.map(lambda s, d: s + d, _np(start), mean)
  return new, mean, sum(losses) / w.sum(), deltas


def _round_one_is_full_fedavg(state, row1, params, x, y, counts, rule="padded"):
  """Round 1: nobody has times to report, so everybody trains the whole model."""
  assert row1["stragglers"] == [] and row1["keep_fraction"] == [1.0] * len(counts)
  want, _, loss, _ = _hand_step(params, x, y, counts, [np.ones(H)] * len(counts), rule)
  _assert_tree_close(state.server.params, want, rtol=1e-5, atol=1e-6)
  assert row1["train_loss"] == pytest.approx(loss, rel=1e-5)


def _keep_rule(method):
  return "clip_network" if method == "clip_network" else "clip_compute"


def _clip_round_two(method, counts, population=None):
  """Round 2 of a CLIP method, checked by hand; returns (straggler, p, rho, row 2)."""
  algo, params, (x, y), population = make_setting(method, counts, population=population)
  state1, (row1,) = run_rounds(algo, params, 1)
  _round_one_is_full_fedavg(state1, row1, params, x, y, counts)
  w1 = state1.server.params
  state2, row2 = algo.apply(state1, 1)

  rule = _keep_rule(method)
  straggler, p, rho, t_star, f_star, fit, net = _hand_keep(row1, rule)
  assert np.flatnonzero(straggler).tolist() == np.flatnonzero(population.straggler).tolist()
  (slow,) = np.flatnonzero(straggler)
  assert row2["stragglers"] == [int(slow)]
  np.testing.assert_allclose(row2["keep_fraction"], p, rtol=0, atol=1e-6)
  # The library's rule on the hand-derived quantiles gives the same p.
  decision = stragglers.StragglerDecision(jnp.asarray(True), jnp.float32(t_star),
                                          jnp.float32(f_star))
  table = keep_lib.make_flop_table(lambda q: _kept(q) / H, p_min=0.5, layer_sizes={"hidden": H})
  assert float(keep_lib.keep_fraction(decision, fit[slow], net[slow], method=rule,
                                      table=table)) == pytest.approx(p[slow])

  # The straggler drops m = 8 - ceil(8 p) units. In its first pruning round its threshold is
  # the smallest positive score, so exactly one unit is invariant (the scores are distinct)
  # and the other m - 1 are slack, taken by ascending score: the m lowest-scored units go.
  kept = _kept(p[slow])
  m = H - kept
  units = np.ones(H)
  if m:
    scores = _unit_scores(w1, params)
    order = np.sort(scores)
    assert np.all(np.diff(order) > 1e-4 * order[1:])    # no near-ties for float32 to flip
    units[np.argsort(scores)[:m]] = 0.0
  assert row2["invariant_units"][slow] == (1 if m else 0)
  assert row2["slack_units"][slow] == max(m - 1, 0)
  others = [c for c in range(len(counts)) if c != slow]
  assert [row2["invariant_units"][c] for c in others] == [0] * len(others)
  np.testing.assert_array_equal(np.asarray(state2.clip.last_prune_mask["hidden"][slow]), units)

  masks = [units if c == slow else np.ones(H) for c in range(len(counts))]
  want, _, loss, _ = _hand_step(w1, x, y, counts, masks, "padded")
  _assert_tree_close(state2.server.params, want, rtol=1e-5, atol=1e-6)
  assert row2["train_loss"] == pytest.approx(loss, rel=1e-5)
  # The pruned sub-network's fit time: kept / 8 of the full fit.
  assert row2["fit_s"][slow] == pytest.approx(fit[slow] * kept / H, rel=1e-8)
  return slow, p, rho, row2


def test_clip_compute_round_two_prunes_the_slow_clients_lowest_scored_units():
  slow, p, rho, row2 = _clip_round_two("clip_compute", COUNTS)
  # By hand from the clock: fast fits 6 x 336 / 1e5 = 0.02016 s, the slow one 5 x 336 / 5e4
  # = 0.0336 s; F* = 0.02016 + 0.2 (0.0336 - 0.02016) = 0.022848; rho = 0.68: p = 0.625.
  assert slow == 2
  assert rho[slow] == pytest.approx(0.68, rel=1e-6) and p[slow] == 0.625
  # Its pruned fit meets the target it was given: 0.0336 x 5 / 8 = 0.021 <= F*.
  assert row2["fit_s"][slow] == pytest.approx(0.021) and row2["fit_s"][slow] <= 0.022848


# A network straggler: 4G at 32.5 ms per message against 5G's 30 ms. Everybody computes
# alike, so the compute rule has nothing to cut, while the network rule cuts compute to hide
# the slower network: rho = (T* - net) / fit = 1 - 0.8 (net_slow - net_fast) / fit ~ 0.80.
_NETWORK_TIERS = devices.Tiers(
    compute={"fast": 1e5, "slow": 5e4},
    network={"5g": devices.NetworkTier(uplink_bps=41.85e6, downlink_bps=241.61e6, latency_s=0.030),
             "4g": devices.NetworkTier(uplink_bps=27e6, downlink_bps=56.2e6, latency_s=0.0325)})


def test_clip_network_prunes_a_network_straggler_that_clip_compute_leaves_whole():
  population = devices.make_population(5, counts={"network": 1}, seed=0, tiers=_NETWORK_TIERS)
  assert np.flatnonzero(population.network_slow).tolist() == [2]
  assert not population.compute_slow.any()
  counts = [6] * 5
  slow, p, rho, row2 = _clip_round_two("clip_network", counts, population)
  _, p_compute, rho_compute, row2_compute = _clip_round_two("clip_compute", counts, population)
  assert row2["stragglers"] == row2_compute["stragglers"] == [slow] == [2]
  # By hand: every fit is 6 x 336 / 1e5 = 0.02016 s; the 4G client's network is slower by
  # 2 messages x 2.5 ms plus its download (D words) and upload (D + 1) at 4G rates.
  d_net = (2 * 0.0025 + 8 * 4 * D * (1 / 56.2e6 - 1 / 241.61e6)
           + 8 * 4 * (D + 1) * (1 / 27e6 - 1 / 41.85e6))
  assert rho[slow] == pytest.approx(1 - 0.8 * d_net / 0.02016, rel=1e-6)
  assert rho_compute[slow] == pytest.approx(1.0)     # F* = everybody's fit: nothing to cut
  assert p[slow] == 0.75 and p_compute[slow] == 1.0
  assert row2["keep_fraction"][slow] == 0.75 and row2_compute["keep_fraction"][slow] == 1.0


def _fluid_invariant(g, deltas, voters, threshold, vote=0.75):
  """FLuID's invariant units by hand: every weight of the unit's group (kernel column, bias,
  outgoing row) has |delta| <= |threshold w_g| for at least `vote` of the voters."""
  g = _np(g)
  voting = [d for d, v in zip(deltas, voters) if v]
  def ok(pick_d, pick_g):
    agree = sum((np.abs(pick_d(d)) <= np.abs(threshold * pick_g(g))).astype(int) for d in voting)
    return agree >= vote * len(voting)
  kernel = ok(lambda t: t["hidden"]["kernel"], lambda t: t["hidden"]["kernel"]).all(0)
  bias = ok(lambda t: t["hidden"]["bias"], lambda t: t["hidden"]["bias"])
  out = ok(lambda t: t["out"]["kernel"], lambda t: t["out"]["kernel"]).all(1)
  return kernel & bias & out


def test_fluid_round_two_sends_the_straggler_the_servers_sub_model():
  rounds = 3
  # FLuID's CIFAR schedule over 3 rounds: threshold 1.5 until round 2 measures one, growth
  # from round round(10 x 3 / 35) + 1 = 2 every 2nd round, so none before round 3.
  fluid = settings.FluidServer(*fluid_lib.make_server(SPEC, "cifar10", rounds))
  algo, params, (x, y), population = make_setting("fluid", COUNTS, rule="participation_weighted",
                                                  fluid=fluid)
  state1, (row1,) = run_rounds(algo, params, 1)
  _round_one_is_full_fedavg(state1, row1, params, x, y, COUNTS, "participation_weighted")
  # The server read every client's round-1 update (all five are voters).
  _, _, _, deltas1 = _hand_step(params, x, y, COUNTS, [np.ones(H)] * 5, "padded")
  invariant1 = _fluid_invariant(params, deltas1, [True] * 5, 1.5)
  assert row1["fluid_invariant_units"] == {"hidden": int(invariant1.sum())}
  assert row1["fluid_fill_units"] == {"hidden": 0}         # nobody pruned in round 1
  assert row1["fluid_threshold"] == {"hidden": 1.5}
  assert row1["messages"] == [2] * 5                       # no keys, no broadcast

  w1 = state1.server.params
  rank = np.asarray(state1.fluid.choice.drop_rank["hidden"])
  assert sorted(rank.tolist()) == list(range(H))
  # The invariant units head the server's drop order.
  np.testing.assert_array_equal(np.sort(np.flatnonzero(rank < invariant1.sum())),
                                np.flatnonzero(invariant1))
  state2, row2 = algo.apply(state1, 1)
  # The straggler and its keep fraction as clip_compute's, from the times the server saw.
  straggler, p, _, _, _, _, _ = _hand_keep(row1, "clip_compute")
  (slow,) = np.flatnonzero(straggler)
  assert row2["stragglers"] == [int(slow)] == [2]
  np.testing.assert_allclose(row2["keep_fraction"], p, rtol=0, atol=1e-6)
  assert p[slow] == 0.625
  kept = _kept(p[slow])
  m = H - kept
  units = (rank >= m).astype(float)                        # it drops the head of the order
  n_inv = int(invariant1.sum())
  assert row2["invariant_units"][slow] == min(n_inv, m)
  assert row2["slack_units"][slow] == max(m - n_inv, 0)
  # Only the straggler downloads less: its sub-model of kept units, 8 kept + 3 parameters.
  downlink = population.profile.downlink_bps
  assert row2["download_s"][slow] == pytest.approx(8 * 4 * (8 * kept + K) / downlink[slow],
                                                   abs=1e-9)
  assert row2["download_s"][0] == pytest.approx(8 * 4 * D / downlink[0], abs=1e-9)

  masks = [units if c == slow else np.ones(H) for c in range(5)]
  want, _, loss, deltas2 = _hand_step(w1, x, y, COUNTS, masks, "participation_weighted")
  _assert_tree_close(state2.server.params, want, rtol=1e-5, atol=1e-6)
  assert row2["train_loss"] == pytest.approx(loss, rel=1e-5)
  # Round 2's invariance: the four non-stragglers vote, and the straggler's drop of m units
  # used the n_inv invariant units it was offered, filled with m - n_inv others.
  invariant2 = _fluid_invariant(w1, deltas2, ~straggler, 1.5)
  assert row2["fluid_invariant_units"] == {"hidden": int(invariant2.sum())}
  assert row2["fluid_fill_units"] == {"hidden": max(m - n_inv, 0)}
  assert row2["fluid_threshold"] == {"hidden": 1.5}


def test_secure_participation_weighted_round_is_the_plain_mean_to_the_quantisation_step():
  counts = [6] * 5        # equal weights: their codes are equal and cancel in num / den
  algo, params, (x, y), population = make_setting("ordered", counts, secure=True,
                                                  rule="participation_weighted")
  state1, (row1,) = run_rounds(algo, params, 1)
  w1 = state1.server.params
  state2, row2 = algo.apply(state1, 1)
  assert row2["secagg_survivors"] == 5
  # Under SecAgg, T = fit + net includes the slow client's slower mask expansion; F* is over
  # fits alone: 0.02016 + 0.2 (0.04032 - 0.02016) = 0.024192, rho = 0.6: p = 0.5.
  straggler, p, rho, _, _, _, _ = _hand_keep(row1, "clip_compute")
  (slow,) = np.flatnonzero(straggler)
  assert row2["stragglers"] == [int(slow)] == [2]
  assert rho[slow] == pytest.approx(0.6, rel=1e-6) and p[slow] == 0.5
  np.testing.assert_allclose(row2["keep_fraction"], p, rtol=0, atol=1e-6)
  units = (np.arange(H) < _kept(p[slow])).astype(float)     # FjORD keeps the first units
  masks = [units if c == slow else np.ones(H) for c in range(5)]
  want, mean, _, deltas = _hand_step(w1, x, y, counts, masks, "participation_weighted")
  assert max(np.abs(leaf).max() for d in deltas for leaf in _leaves(d)) < 1.0  # not clipped
  # Tolerance from the quantisation: each client encodes (r / L) y, L = 2^b - 1, r its weight
  # code, with stochastic rounding off by less than one code step; a step decodes to 2 c / L,
  # so after dividing by the common r / L, each of the n = 5 summed values (the numerator
  # sum_k d_k and the denominator sum_k m_k, the trainers' count) is off by less than
  # e = n 2 c / r. The mean num / den is then off by less than e (1 + |mean|) / (den - e),
  # den >= 4 trainers. On top: the 1e-6 the plain rounds above allow for float32 training.
  bits, clip, max_weight = secagg.max_safe_bits(5), 1.0, 100.0   # as make_setting sets them
  r = np.rint(6 / max_weight * ((1 << bits) - 1))
  e = 5 * 2 * clip / r
  worst_mean = max(np.abs(leaf).max() for leaf in _leaves(mean))
  atol = e * (1 + worst_mean) / (4 - e) + 1e-6
  assert atol < 1e-5            # tight enough to tell the rules apart (below)
  _assert_tree_close(state2.server.params, want, rtol=0, atol=atol)
  # The padded mean differs by far more than the tolerance where the straggler pruned.
  padded, _, _, _ = _hand_step(w1, x, y, counts, masks, "padded")
  gap = max(np.abs(a - b).max() for a, b in zip(_leaves(padded), _leaves(want)))
  assert gap > 100 * atol
