"""FLuID's server-side invariant dropout: vote, voters, unit groups, threshold schedule, order."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import fluid, models
from clipjax.models.units import ParamSlice, UnitLayer

# in 3 -> h0 (4 units) -> h1 (3 units) -> out 2. h1/kernel is h0's outgoing (rows) and h1's
# incoming (columns): one tensor read by two layers with two thresholds.
SPEC = (
    UnitLayer("h0", 4, (ParamSlice(("h0", "kernel"), -1, "incoming"),
                        ParamSlice(("h0", "bias"), 0, "bias"),
                        ParamSlice(("h1", "kernel"), 0, "outgoing"))),
    UnitLayer("h1", 3, (ParamSlice(("h1", "kernel"), -1, "incoming"),
                        ParamSlice(("h1", "bias"), 0, "bias"),
                        ParamSlice(("out", "kernel"), 0, "outgoing"))),
)
SHAPES = {"h0": {"kernel": (3, 4), "bias": (4,)}, "h1": {"kernel": (4, 3), "bias": (3,)},
          "out": {"kernel": (3, 2), "bias": (2,)}}
# |w_g| = 2 everywhere, so |d| <= |th w_g| reads |d| <= 2 th.
GLOBAL = jax.tree.map(lambda s: jnp.full(s, 2.0, jnp.float32), SHAPES,
                      is_leaf=lambda s: isinstance(s, tuple))


def _zero_deltas(num, shapes=SHAPES):
  return jax.tree.map(lambda s: np.zeros((num, *s), np.float32), shapes,
                      is_leaf=lambda s: isinstance(s, tuple))


def _jnp(tree):
  return jax.tree.map(jnp.asarray, tree)


# Jitted once per shape and static argument (eager op-by-op dispatch is slow on a busy CPU).
INVARIANT = jax.jit(fluid.invariant_units, static_argnames=("unit_spec", "vote"))
UPDATE = jax.jit(fluid.server_update, static_argnames=("unit_spec", "config"))


def _invariant(deltas, voters, th):
  out = INVARIANT(SPEC, GLOBAL, _jnp(deltas), jnp.asarray(voters), th)
  return {k: np.asarray(v) for k, v in out.items()}


TH = {"h0": jnp.float32(0.1), "h1": jnp.float32(0.1)}


def _vote_deltas():
  d = _zero_deltas(5)
  d["h0"]["kernel"][0, 0, 0] = 1.0         # unit 0: 1 of 4 voters moved it
  d["h0"]["kernel"][:2, 2, 1] = 1.0        # unit 1: 2 of 4 voters moved it
  d["h0"]["bias"][:4, 3] = 0.2             # unit 3: every voter exactly at |th w_g| = 0.2
  d["h0"]["kernel"][4] = 5.0               # client 4 (a straggler) moved everything
  return d


def test_vote_of_three_quarters_of_the_voters():
  d = _vote_deltas()
  four = np.array([True, True, True, True, False])
  # 3 of 4 invariant -> invariant; 2 of 4 -> not; |d| == |th w_g| counts as invariant.
  np.testing.assert_array_equal(_invariant(d, four, TH)["h0"], [True, False, True, True])
  # 3 voters: unit 0 has 2 invariant votes < 0.75 * 3.
  three = np.array([True, True, True, False, False])
  np.testing.assert_array_equal(_invariant(d, three, TH)["h0"], [False, False, True, True])


def test_stragglers_updates_are_ignored():
  d = _vote_deltas()
  four = np.array([True, True, True, True, False])
  base = _invariant(d, four, TH)
  d2 = _vote_deltas()
  d2["h0"]["kernel"][4] = -7.0
  d2["h1"]["kernel"][4] = 9.0
  assert all(np.array_equal(base[k], v) for k, v in _invariant(d2, four, TH).items())
  # Letting the straggler vote (5 voters, 3.75 needed): unit 0 has 3 votes, 2 and 3 have 4.
  np.testing.assert_array_equal(_invariant(d, np.ones(5, bool), TH)["h0"],
                                [False, False, True, True])
  # The vote is per weight: client 0 moves unit 3's bias and client 4 its kernel, yet each
  # weight keeps 4 of 5 votes, so the unit stays invariant; a second mover of the bias breaks it.
  d["h0"]["bias"][0, 3] = 0.3
  np.testing.assert_array_equal(_invariant(d, np.ones(5, bool), TH)["h0"],
                                [False, False, True, True])
  d["h0"]["bias"][1, 3] = 0.3
  np.testing.assert_array_equal(_invariant(d, np.ones(5, bool), TH)["h0"],
                                [False, False, True, False])
  # No voters: nothing is invariant, nothing measured.
  none = _invariant(d, np.zeros(5, bool), TH)
  assert not any(v.any() for v in none.values())


@pytest.mark.parametrize("role", ["incoming", "bias", "outgoing", "none"])
def test_unit_needs_incoming_bias_and_outgoing_invariant(role):
  d = _zero_deltas(1)
  if role == "incoming":
    d["h1"]["kernel"][0, 1, 2] = 1.0   # h1 unit 2's column; also h0 unit 1's outgoing row
  elif role == "bias":
    d["h1"]["bias"][0, 2] = 1.0
  elif role == "outgoing":
    d["out"]["kernel"][0, 2, 1] = 1.0
  inv = _invariant(d, np.ones(1, bool), TH)
  np.testing.assert_array_equal(inv["h1"], [True, True, role == "none"])
  np.testing.assert_array_equal(inv["h0"], [True, role != "incoming", True, True])


def test_each_layer_reads_a_shared_tensor_with_its_own_threshold():
  d = _zero_deltas(1)
  d["h1"]["kernel"][0, 1, 0] = 0.5   # h0 unit 1's outgoing, h1 unit 0's incoming
  inv = _invariant(d, np.ones(1, bool), {"h0": jnp.float32(0.3), "h1": jnp.float32(0.1)})
  np.testing.assert_array_equal(inv["h0"], [True, True, True, True])   # 0.5 <= 0.6
  np.testing.assert_array_equal(inv["h1"], [False, True, True])        # 0.5 > 0.2


def test_conv_to_dense_flatten_rows_on_leaf_cnn():
  model = models.get_model("leaf_cnn", width=0.125)
  params = jax.eval_shape(model.init, jax.random.key(0))
  glob = jax.tree.map(lambda a: jnp.ones(a.shape, jnp.float32), params)
  n = model.width_dict["conv1"]
  tile = {layer.name: layer for layer in model.unit_spec}["conv1"].slices[2].tile
  assert tile * n == params["dense0"]["kernel"].shape[0]
  d = jax.tree.map(lambda a: np.ones((1, *a.shape), np.float32), params)
  d["conv1"]["kernel"][..., 3] = 0.0
  d["conv1"]["bias"][:, 3] = 0.0
  d["dense0"]["kernel"][:, 3::n, :] = 0.0     # NHWC flatten: rows i with i % n == 3
  th = {layer.name: jnp.float32(0.1) for layer in model.unit_spec}
  inv = INVARIANT(model.unit_spec, glob, _jnp(d), jnp.ones(1, bool), th)
  assert {k: v.shape for k, v in inv.items()} == {k: (w,) for k, w in model.widths}
  np.testing.assert_array_equal(np.flatnonzero(inv["conv1"]), [3])
  assert not inv["conv0"].any() and not inv["dense0"].any()
  d["dense0"]["kernel"][0, 5 * n + 3, 7] = 1.0   # one of channel 3's 49 rows moved
  inv = INVARIANT(model.unit_spec, glob, _jnp(d), jnp.ones(1, bool), th)
  assert not inv["conv1"].any()


# One prunable layer for the schedule: in 3 -> h0 (4) -> out 2.
SPEC1 = SPEC[:1]
SHAPES1 = {"h0": {"kernel": (3, 4), "bias": (4,)}, "h1": {"kernel": (4, 3), "bias": (3,)}}


def _relative_deltas(changes, num=2):
  """Deltas whose unit j moves every weight of its group by changes[j] * |w_g| (all clients)."""
  d = _zero_deltas(num, SHAPES1)
  c = np.asarray(changes, np.float32) * np.float32(2.0)
  d["h0"]["kernel"][:] = c
  d["h0"]["bias"][:] = c
  d["h1"]["kernel"][:] = c[:, None]
  return _jnp(d)


GLOBAL1 = {"h0": GLOBAL["h0"], "h1": GLOBAL["h1"]}


def _step(state, changes, dropped, cfg, key=0, voters=None, deltas=None):
  deltas = _relative_deltas(changes) if deltas is None else deltas
  voters = jnp.ones(2, bool) if voters is None else voters
  return UPDATE(state, SPEC1, GLOBAL1, deltas, voters, {"h0": jnp.int32(dropped)},
                jax.random.key(key), config=cfg)


def test_threshold_init_then_additive_growth_until_enough():
  cfg = fluid.FluidConfig(init_round=2, init_rounds=2, first_threshold=0.5, growth_start=3,
                          growth_every=2, growth_step=0.1)
  f32 = np.float32
  state = fluid.init_state(SPEC1, cfg)
  rounds = [  # (unit changes, units dropped this round, invariant, th used, th after)
      ([0.1, 0.3, 0.6, 0.9], 0, [1, 1, 0, 0], f32(0.5), f32(0.5)),       # placeholder
      ([0.2, 0.4, 0.6, 0.8], 0, [1, 1, 0, 0], f32(0.5), f32(0.2)),       # th = min
      ([0.4, 0.5, 0.6, 0.8], 0, [0, 0, 0, 0], f32(0.2), f32(0.3)),       # (0.2 + 0.4) / 2
      ([0.25, 0.35, 0.45, 0.55], 0, [1, 0, 0, 0], f32(0.3), f32(0.3)),   # counter 1
      ([0.25, 0.35, 0.45, 0.55], 3, [1, 1, 0, 0], f32(0.3) + f32(0.1), f32(0.3) + f32(0.1)),
      ([0.25, 0.35, 0.45, 0.55], 2, [1, 1, 0, 0], f32(0.3) + f32(0.1), f32(0.3) + f32(0.1)),
      ([0.25, 0.35, 0.45, 0.55], 2, [1, 1, 0, 0], f32(0.3) + f32(0.1), f32(0.3) + f32(0.1)),
  ]
  fills = []
  for r, (changes, dropped, inv, used, after) in enumerate(rounds, start=1):
    choice, state, counts = _step(state, changes, dropped, cfg, key=r)
    np.testing.assert_allclose(counts.threshold["h0"], used, rtol=1e-6, err_msg=f"round {r}")
    np.testing.assert_allclose(state.threshold["h0"], after, rtol=1e-6, err_msg=f"round {r}")
    assert int(counts.invariant["h0"]) == sum(inv) == int(choice.invariant["h0"])
    # the invariant units head the order
    np.testing.assert_array_equal(np.sort(choice.drop_rank["h0"][np.asarray(inv, bool)]),
                                  np.arange(sum(inv)))
    assert bool(state.initialised) == (r >= 2)
    fills.append(int(counts.fill["h0"]))
    # Round 5 dropped 3 with 1 invariant (no stop); round 6 dropped 2 with 2 (stop for good):
    # round 7 is a growth round, but th stays.
    assert bool(state.stopped["h0"]) == (r >= 6), f"round {r}"
  assert fills == [0, 0, 0, 0, 2, 0, 0]
  assert int(state.round) == 7


def test_first_threshold_none_uses_this_rounds_minimum_and_stragglers_do_not_count():
  cfg = fluid.FluidConfig(first_threshold=None)
  deltas = _relative_deltas([0.1, 0.3, 0.6, 0.9], num=3)
  straggler = jax.tree.map(lambda a: a.at[2].set(0.0), deltas)   # straggler: min would be 0
  voters = jnp.asarray([True, True, False])
  _, state, counts = _step(fluid.init_state(SPEC1, cfg), None, 0, cfg, voters=voters,
                           deltas=straggler)
  np.testing.assert_allclose(counts.threshold["h0"], np.float32(0.1), rtol=1e-6)
  assert int(counts.invariant["h0"]) == 1
  assert not bool(state.initialised)
  _, state, _ = _step(state, None, 0, cfg, voters=voters, deltas=straggler)   # round 2
  np.testing.assert_allclose(state.threshold["h0"], np.float32(0.1), rtol=1e-6)


# Ten units for the drop order.
SPEC10 = (UnitLayer("h", 10, (ParamSlice(("h", "kernel"), -1, "incoming"),
                              ParamSlice(("h", "bias"), 0, "bias"),
                              ParamSlice(("o", "kernel"), 0, "outgoing"))),)
SHAPES10 = {"h": {"kernel": (2, 10), "bias": (10,)}, "o": {"kernel": (10, 2), "bias": (2,)}}
GLOBAL10 = jax.tree.map(lambda s: jnp.full(s, 2.0, jnp.float32), SHAPES10,
                        is_leaf=lambda s: isinstance(s, tuple))
INVARIANT10 = [1, 4, 6, 8]


def _order_round(key, dropped=2):
  """One call with invariant units {1, 4, 6, 8} after a round that dropped units {4, 7}."""
  cfg = fluid.FluidConfig(first_threshold=0.1)
  state = fluid.init_state(SPEC10, cfg)
  last = np.array([2, 3, 4, 5, 0, 6, 7, 1, 8, 9], np.int32)   # rank < 2: units 4 and 7
  state = state.replace(choice=fluid.ServerChoice(drop_rank={"h": jnp.asarray(last)},
                                                  invariant={"h": jnp.int32(0)}))
  d = _zero_deltas(3, SHAPES10)
  moving = np.setdiff1d(np.arange(10), INVARIANT10)
  d["h"]["bias"][:, moving] = 1.0
  return UPDATE(state, SPEC10, GLOBAL10, _jnp(d), jnp.ones(3, bool), {"h": jnp.int32(dropped)},
                key, config=cfg)


def test_drop_order_groups_and_exact_counts_under_jit_and_vmap():
  choice, state, counts = _order_round(jax.random.key(7))
  rank = np.asarray(choice.drop_rank["h"])
  np.testing.assert_array_equal(np.sort(rank), np.arange(10))
  np.testing.assert_array_equal(np.asarray(state.prev_dropped["h"]), np.isin(np.arange(10), [4, 7]))
  assert rank[4] == 0                                             # (a) invariant, dropped last
  assert sorted(rank[[1, 6, 8]]) == [1, 2, 3]                     # (b) other invariant
  assert int(counts.invariant["h"]) == 4 and int(counts.fill["h"]) == 2   # round's drop of 2
  ps = jnp.asarray(np.arange(11) / 10.0, jnp.float32)
  masks = jax.jit(fluid.client_masks)(choice.drop_rank, ps)["h"]
  per_client = jax.jit(jax.vmap(fluid.client_mask, in_axes=(None, 0)))(choice, ps)
  ms = 10 - np.arange(11)   # m = n - ceil(p n) for p = k / 10
  np.testing.assert_array_equal(np.asarray(per_client[0]["h"]), np.asarray(masks))
  for c, m in enumerate(ms):
    gone = set(np.flatnonzero(np.asarray(masks[c]) == 0))
    assert len(gone) == m
    assert gone == set(np.flatnonzero(rank < m))                  # nested drop sets
    if m >= 1:
      assert 4 in gone
    if m <= 4:
      assert gone <= set(INVARIANT10)
    else:                                                         # shortfall: random fill
      assert gone >= set(INVARIANT10)
    assert int(per_client[1][c]) == min(4, m) and int(per_client[2][c]) == max(m - 4, 0)


def test_next_round_bookkeeping_and_units_dropped():
  choice, state, _ = _order_round(jax.random.key(7))
  keep = jnp.asarray([1.0, 0.5, 0.8, 1.0], jnp.float32)
  dropped = fluid.units_dropped(SPEC10, keep)
  assert int(dropped["h"]) == 5
  d = _zero_deltas(3, SHAPES10)
  d["h"]["bias"][:] = 1.0       # nothing invariant this time
  _, state2, counts = UPDATE(state, SPEC10, GLOBAL10, _jnp(d), jnp.ones(3, bool), dropped,
                             jax.random.key(8), config=fluid.FluidConfig(first_threshold=0.1))
  assert int(counts.fill["h"]) == 1                     # 5 dropped, 4 of them invariant
  assert int(counts.invariant["h"]) == 0
  np.testing.assert_array_equal(np.asarray(state2.prev_dropped["h"]),
                                np.asarray(choice.drop_rank["h"]) < 5)
  assert not bool(state2.stopped["h"])                  # 4 invariant < 5 needed
  # A round without stragglers keeps the last drop set (FLuID's prevDropWeights).
  _, state3, _ = UPDATE(state2, SPEC10, GLOBAL10, _jnp(d), jnp.ones(3, bool),
                        {"h": jnp.int32(0)}, jax.random.key(9),
                        config=fluid.FluidConfig(first_threshold=0.1))
  np.testing.assert_array_equal(np.asarray(state3.prev_dropped["h"]),
                                np.asarray(state2.prev_dropped["h"]))


def test_deterministic_for_a_fixed_key():
  a, _, _ = _order_round(jax.random.key(11))
  b, _, _ = _order_round(jax.random.key(11))
  c, _, _ = _order_round(jax.random.key(12))
  np.testing.assert_array_equal(np.asarray(a.drop_rank["h"]), np.asarray(b.drop_rank["h"]))
  assert not np.array_equal(np.asarray(a.drop_rank["h"]), np.asarray(c.drop_rank["h"]))
  # only the random parts differ: the groups stay put
  for x in (a, c):
    r = np.asarray(x.drop_rank["h"])
    assert r[4] == 0 and sorted(r[[1, 6, 8]]) == [1, 2, 3]


def test_server_update_compiles_once():
  cfg = fluid.FluidConfig(first_threshold=0.1)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(st, d, m, k):
    return fluid.server_update(st, SPEC10, GLOBAL10, d, jnp.ones(3, bool), m, k, config=cfg)

  state = fluid.init_state(SPEC10, cfg)
  d = _jnp(_zero_deltas(3, SHAPES10))
  for r in range(3):
    _, state, _ = step(state, d, {"h": jnp.int32(r)}, jax.random.key(r))
  assert int(state.round) == 3


def test_bad_input():
  with pytest.raises(ValueError, match="vote"):
    fluid.FluidConfig(vote=0.0)
  with pytest.raises(ValueError, match="growth_every"):
    fluid.FluidConfig(growth_every=0)
  with pytest.raises(ValueError, match="preset"):
    fluid.preset("mnist")
  with pytest.raises(ValueError, match="dropped"):
    fluid.server_update(fluid.init_state(SPEC10), SPEC10, GLOBAL10,
                        _jnp(_zero_deltas(3, SHAPES10)), jnp.ones(3, bool), {"x": 0},
                        jax.random.key(0))


def test_presets_follow_fluid():
  cifar = fluid.preset("cifar10")
  assert (cifar.first_threshold, cifar.growth_step, cifar.growth_every, cifar.growth_start) == (
      1.5, 0.2, 2, 10)
  assert fluid.preset("femnist", num_rounds=100).growth_start == 50   # 125 of 250
  assert fluid.preset("shakespeare", num_rounds=30).growth_start == 10  # 20 of 60
