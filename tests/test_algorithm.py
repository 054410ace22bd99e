"""The round algorithm on a tiny MLP, against hand-computed SGD, masks, means and clock."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clipjax import algorithm, methods, secagg
from clipjax import virtual_clock as clock_lib
from clipjax.clip import devices, invariance
from clipjax.clip import keep as keep_lib
from clipjax.fl import aggregation, local, training
from clipjax.fl import server as server_lib
from clipjax.models import units

F, H, K = 4, 8, 3
LR = 0.5
SPEC = (units.UnitLayer("hidden", H, (
    units.ParamSlice(("hidden", "kernel"), 1, "incoming"),
    units.ParamSlice(("hidden", "bias"), 0, "bias"),
    units.ParamSlice(("out", "kernel"), 0, "outgoing"))),)


def apply_fn(params, x, prune_mask=None):
  h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  if prune_mask is not None:
    h = h * prune_mask["hidden"]
  return h @ params["out"]["kernel"] + params["out"]["bias"]


def init_params(seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
  return {"hidden": {"kernel": f32(rng.normal(size=(F, H))), "bias": f32(rng.normal(size=H) * .1)},
          "out": {"kernel": f32(rng.normal(size=(H, K))), "bias": f32(np.zeros(K))}}


def make_data(counts, slots=6, seed=1):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(len(counts), slots, F)).astype(np.float32)
  y = rng.integers(0, K, size=(len(counts), slots)).astype(np.int32)
  valid = np.arange(slots)[None] < np.asarray(counts)[:, None]
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(valid)


def hand_delta(params, x, y, mask):
  """One full-batch SGD step of mean cross-entropy, by hand in NumPy, zero at pruned units."""
  w1, b1 = np.asarray(params["hidden"]["kernel"], np.float64), np.asarray(params["hidden"]["bias"])
  w2, b2 = np.asarray(params["out"]["kernel"], np.float64), np.asarray(params["out"]["bias"])
  pre = x @ w1 + b1
  h = np.maximum(pre, 0) * mask
  z = h @ w2 + b2
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  loss = -np.log(p[np.arange(len(y)), y]).sum()
  gz = (p - np.eye(K)[y]) / len(y)
  gh = gz @ w2.T * mask * (pre > 0)
  grads = {"hidden": {"kernel": x.T @ gh, "bias": gh.sum(0)},
           "out": {"kernel": h.T @ gz, "bias": gz.sum(0)}}
  delta = jax.tree.map(lambda g: -LR * g, grads)
  delta["hidden"]["kernel"] *= mask[None]   # the parameter mask of DESIGN 2.5
  delta["hidden"]["bias"] *= mask
  delta["out"]["kernel"] *= mask[:, None]
  return delta, loss


def flops_per_example(kept):
  return 6.0 * (F * kept["hidden"] + kept["hidden"] * K)


def make_setting(method_name, counts, *, secure=False, rule="padded", compute_slow=1,
                 dropout_rate=0.0, chunk=0, cohort=None, mesh=None, loop="host", **extra):
  method = methods.get_method(method_name)
  num = len(counts)
  x, y, valid = make_data(counts)
  train = training.make_trainer(apply_fn, lambda xc, yc, i: (xc[i], yc[i]), optax.sgd(LR),
                                local.LocalSpec(epochs=1, batch_size=6), loop=loop,
                                client_batch=1 if loop == "host" else 0)
  params = init_params()
  server_opt = server_lib.make_server_optimizer("sgd", 1.0)
  tiers = devices.Tiers(compute={"fast": 1e5, "slow": 5e4})
  population = devices.make_population(num, counts={"compute": compute_slow}, seed=0, tiers=tiers)
  clock = clock_lib.ClockModel(population=population, flops_per_example=flops_per_example,
                               full_widths={"hidden": H}, num_examples=np.asarray(counts),
                               epochs=1, seed=0, jitter_sigma=0.0)
  frac = lambda p: float(invariance.kept_units(H, p)) / H  # noqa: E731
  table = keep_lib.make_flop_table(frac, p_min=0.5, layer_sizes={"hidden": H})
  keys = None
  if secure or method.broadcasts:
    keys = algorithm.SecAggSetting(
        kwargs=dict(protocol="secagg", threshold=cohort or num, allow_weak=True), dropout_rate=dropout_rate)
  settings = (aggregation.SecureSettings(bits=secagg.max_safe_bits(num), clip=1.0,
                                         max_weight=100.0) if secure else None)
  setting = algorithm.RoundSetting(
      method=method, unit_spec=SPEC,
      pruned_round=methods.make_pruned_round(method, SPEC, train),
      aggregate=aggregation.make_aggregator(rule, params, settings), aggregation=rule,
      secure=secure, server_step=lambda st, d: server_lib.server_update(st, d, server_opt),
      server_init=lambda p: server_lib.server_init(p, server_opt), clock=clock,
      keep=algorithm.KeepSetting(0.2, table, None), keys=keys, x=x, y=y, valid=valid,
      weights=np.asarray(counts, np.float32), base_key=jax.random.key(3), seed=0,
      server_seconds=0.125, scorer=methods.make_scorer(SPEC), chunk=chunk, cohort=cohort,
      mesh=mesh, **extra)
  return algorithm.make_round(setting), params, (np.asarray(x), np.asarray(y)), population


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
  assert algorithm.recompute_round_time(row) == pytest.approx(row["round_time_s"], abs=1e-8)
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
  assert algorithm.recompute_round_time(row2) == pytest.approx(row2["round_time_s"], abs=1e-8)


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
