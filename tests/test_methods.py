"""Each method's mask choice on a tiny MLP (DESIGN 2.4, 2.8), one jitted step for all clients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import methods
from tests.toy import H, SPEC, init_params


def _masks(name, params, prev, p, clip_state=None, server_rank=None, seed=0):
  method = methods.get_method(name)
  num = len(p)
  clip_state = methods.init_clip_state(SPEC, num) if clip_state is None else clip_state
  keys = jax.random.split(jax.random.key(seed), num)
  scores = methods.make_scorer(SPEC)(params, prev)  # every client received prev before
  scores = jax.tree.map(lambda s: jnp.broadcast_to(s, (num,) + s.shape), scores)
  return jax.jit(methods.make_masks(method, SPEC))(params, scores, clip_state, server_rank,
                                                   jnp.asarray(p, jnp.float32), keys)


def _changed(params, rel_change):
  """params whose hidden unit j changed by rel_change[j] relative to `params` (w(t-1))."""
  out = jax.tree.map(lambda a: a, params)
  scale = 1.0 + jnp.asarray(rel_change, jnp.float32)
  out["hidden"] = {"kernel": params["hidden"]["kernel"] * scale[None],
                   "bias": params["hidden"]["bias"] * scale}
  return out


def test_fedavg_builds_no_masks():
  params = init_params()
  prune, pmask, _, inv, slack, _ = _masks("fedavg", params, params, [1.0, 1.0])
  assert prune is None and pmask is None
  np.testing.assert_array_equal(inv, [0, 0])


def test_ordered_keeps_the_first_units_and_random_drops_exactly_m():
  params = init_params()
  p = [1.0, 0.75, 0.5]
  prune, pmask, *_ = _masks("ordered", params, params, p)
  np.testing.assert_array_equal(prune["hidden"][1], (np.arange(H) < 6).astype(np.float32))
  np.testing.assert_array_equal(prune["hidden"][2], (np.arange(H) < 4).astype(np.float32))
  # The parameter mask zeroes the pruned unit's incoming column, bias and outgoing row.
  np.testing.assert_array_equal(pmask["out"]["kernel"][2][:, 0], (np.arange(H) < 4))
  rand, *_ = _masks("random", params, params, p, seed=1)
  np.testing.assert_array_equal(np.sum(rand["hidden"], axis=1), [8, 6, 4])
  other, *_ = _masks("random", params, params, p, seed=2)
  assert not np.array_equal(np.asarray(rand["hidden"]), np.asarray(other["hidden"]))


def test_clip_drops_the_units_whose_global_change_is_smallest():
  prev = init_params()
  change = np.array([0.30, 0.01, 0.20, 0.02, 0.50, 0.03, 0.40, 0.25])
  now = _changed(prev, change)
  # First pruning round: threshold = the smallest score, so one unit is invariant and the
  # rest of the drops are slack units in ascending score.
  prune, _, state, inv, slack, _ = _masks("clip_compute", now, prev, [0.5, 1.0])
  dropped = np.flatnonzero(np.asarray(prune["hidden"][0]) == 0)
  np.testing.assert_array_equal(sorted(dropped), sorted(np.argsort(change)[:4]))
  np.testing.assert_array_equal(prune["hidden"][1], np.ones(H))
  assert int(inv[0]) + int(slack[0]) >= 4 and int(inv[1]) == 0 and int(slack[1]) == 0


def test_method_registry_names_every_method_once():
  assert tuple(methods.METHODS) == ("fedavg", "random", "ordered", "fluid", "clip_compute",
                                    "clip_network", "magnitude", "taylor")
  # The criterion study's rules (issue 25) read no invariance state and broadcast like CLIP.
  assert methods.METHODS["magnitude"].prune_rule in methods.SCORE_RULES
  assert methods.METHODS["taylor"].prune_rule in methods.SCORE_RULES
  assert not methods.METHODS["fluid"].secagg_compatible and methods.METHODS["fluid"].server_prunes
  assert not methods.METHODS["fedavg"].broadcasts and not methods.METHODS["fedavg"].prunes
  with pytest.raises(ValueError, match="Unknown method 'fedprox'"):
    methods.get_method("fedprox")


def test_scores_by_hand_max_relative_and_relative_l2():
  from clipjax.models import units
  prev = init_params()
  now = jax.tree.map(lambda a: a, prev)
  now["out"] = {"kernel": prev["out"]["kernel"].at[2, 0].add(0.5), "bias": prev["out"]["bias"]}
  w1, b1, w2 = (np.asarray(prev["hidden"]["kernel"]), np.asarray(prev["hidden"]["bias"]),
                np.asarray(prev["out"]["kernel"]))
  mx = units.unit_scores(SPEC, now, prev, kind="max_relative")["hidden"]
  l2 = units.unit_scores(SPEC, now, prev, kind="relative_l2")["hidden"]
  np.testing.assert_array_equal(units.unit_scores(SPEC, now, prev)["hidden"], l2)  # default
  # Only unit 2's outgoing weight (2, 0) moved, by 0.5.
  assert float(mx[2]) == pytest.approx(0.5 / (abs(w2[2, 0]) + 1e-8), rel=1e-5)
  group = np.concatenate([w1[:, 2], b1[2:3], w2[2]])
  assert float(l2[2]) == pytest.approx(0.5 / np.linalg.norm(group), rel=1e-5)
  np.testing.assert_array_equal(np.delete(np.asarray(l2), 2), 0.0)
  with pytest.raises(ValueError, match="score kind 'l1'"):
    units.unit_scores(SPEC, now, prev, kind="l1")
