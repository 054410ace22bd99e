"""Invariance scores to unit prune masks: CLIP's client-side invariant dropout (DESIGN 2.4).

For ONE client (vmap over clients): each prunable layer l with n_l units drops exactly
m_l = n_l - ceil(p n_l) units, p the client's keep fraction (may be traced). A unit is invariant
iff its score (relative change of the global model between rounds) is <= the layer threshold
th_l. Units are dropped in this order:

  (a) invariant units this client dropped last round (keeps its sub-model stable),
  (b) other invariant units,
  (c) slack: non-invariant units, by ascending score (`slack="lowest_score"`) or at random
      (`slack="random"`).

Inside (a) and (b), and among equal scores in (c), order is a keyed random permutation. The
order is a rank over the composite key (group, score, random position), a permutation of
0..n_l-1, so `prune_mask = rank >= m_l` (1 = kept) drops exactly m_l units for any traced m_l,
ties included.

Threshold state (per client, per layer): initialised in the client's first pruning round
(some m_l > 0) from that round's scores (default: the smallest positive score, as FLuID starts
from the minimum change), and multiplied by `growth` after every round where fewer than m_l
units were invariant. Default growth 1.2: our choice, not the paper's; FLuID's public CIFAR-10
code raises its thresholds additively by 0.2 from 1.5 (about +13 %), and 1.2 per short round
reaches the m-th score within a few rounds without jumping far past it.

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv 2510.16694 (2025), Sec. 4.2.
  Wang, Nair, Mahajan. FLuID: Mitigating Stragglers in Federated Learning using Invariant
  Dropout. NeurIPS 2023 (invariant dropout, threshold from the minimum change).
  Caldas et al. Expanding the Reach of Federated Learning by Reducing Client Resource
  Requirements. arXiv 1812.07210 (Federated Dropout: random units).
  Horvath et al. FjORD: Fair and Accurate Federated Learning under Heterogeneous Targets with
  Ordered Dropout. NeurIPS 2021 (keep the first units).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import chex
import flax.struct
import jax
import jax.numpy as jnp

SLACK_ORDERS = ("lowest_score", "random")
THRESHOLD_INITS = ("min", "median", "mean")
DEFAULT_GROWTH = 1.2
# ceil(p n) is taken on p n - n 2^-20: float32 rounding of p n (~1e-7 n) can never push an
# exact unit boundary such as 0.7 * 10 over to the next integer.
_CEIL_SLACK = 2.0 ** -20

ThresholdInit = Callable[[jax.Array], jax.Array]


@flax.struct.dataclass
class InvarianceState:
  """One client's invariant-dropout state.

  Attributes:
    thresholds: {layer: f32[]} invariance thresholds th_l.
    initialised: bool[], True after the client's first pruning round.
    last_prune_mask: {layer: f32[n_l]} last round's prune mask (1 = kept).
  """

  thresholds: dict
  initialised: jax.Array
  last_prune_mask: dict


class InvarianceCounts(NamedTuple):
  """Per layer int32[]: invariant units, slack units dropped, units dropped (m_l)."""

  invariant: dict
  slack: dict
  dropped: dict


def kept_units(n: int, p) -> jax.Array:
  """ceil(p n) as int32, robust to float32 rounding, p clipped to [0, 1]."""
  p = jnp.clip(jnp.asarray(p, jnp.float32), 0.0, 1.0)
  kept = jnp.ceil(p * n - n * _CEIL_SLACK).astype(jnp.int32)
  return jnp.clip(kept, 0, n)


def units_to_drop(n: int, p) -> jax.Array:
  """m = n - ceil(p n) as int32."""
  return n - kept_units(n, p)


def init_state(layer_sizes: Mapping[str, int]) -> InvarianceState:
  """Fresh state: thresholds 0 (unset), not initialised, nothing dropped last round."""
  for name, n in layer_sizes.items():
    if int(n) != n or n < 1:
      raise ValueError(f"layer {name!r} must have a positive int size, got {n!r}")
  return InvarianceState(
      thresholds={k: jnp.zeros((), jnp.float32) for k in layer_sizes},
      initialised=jnp.zeros((), bool),
      last_prune_mask={k: jnp.ones((int(n),), jnp.float32) for k, n in layer_sizes.items()})


def replicate_state(state: InvarianceState, num_clients: int) -> InvarianceState:
  """Stacks `num_clients` copies along a new leading client axis C."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape), state)


def _min_positive(score: jax.Array) -> jax.Array:
  smallest = jnp.min(jnp.where(score > 0, score, jnp.inf))
  return jnp.where(jnp.isfinite(smallest), smallest, 0.0)


def _threshold_init_fn(threshold_init) -> ThresholdInit:
  if callable(threshold_init):
    return threshold_init
  rules = {"min": _min_positive, "median": jnp.median, "mean": jnp.mean}
  if threshold_init not in rules:
    raise ValueError(f"threshold_init must be one of {THRESHOLD_INITS} or a callable, "
                     f"got {threshold_init!r}")
  return rules[threshold_init]


def drop_rank(group: jax.Array, secondary: jax.Array, tiebreak: jax.Array) -> jax.Array:
  """Rank of every unit under the lexicographic key (group, secondary, tiebreak), int32[n].

  The rank is always a permutation of 0..n-1 (the sort is stable, remaining ties go by index),
  so `rank >= m` keeps exactly n - m units whatever the ties.
  """
  order = jnp.lexsort((tiebreak, secondary, group))
  return jnp.argsort(order).astype(jnp.int32)


def update(
    state: InvarianceState,
    scores: Mapping[str, jax.Array],
    p,
    key: jax.Array,
    *,
    growth: float = DEFAULT_GROWTH,
    slack: str = "lowest_score",
    threshold_init: str | ThresholdInit = "min",
) -> tuple[dict, InvarianceState, InvarianceCounts]:
  """One round of client-side invariant dropout for ONE client.

  Args:
    state: this client's `InvarianceState`.
    scores: {layer: f32[n_l]} invariance scores (e.g. `clipjax.models.units.unit_scores`).
    p: keep fraction, f32[] in [0, 1] (may be traced); p = 1 prunes nothing.
    key: typed PRNG key of this client and round.
    growth: threshold factor after a round with fewer than m_l invariant units (> 1).
    slack: "lowest_score" or "random" order of the non-invariant units.
    threshold_init: "min" (smallest positive score), "median", "mean", or a callable
      f32[n] -> f32[].

  Returns:
    (prune_mask {layer: f32[n_l]}, new state, `InvarianceCounts`).

  Raises:
    ValueError: for unknown slack / threshold_init, growth <= 0, or layers not matching the state.
  """
  if slack not in SLACK_ORDERS:
    raise ValueError(f"slack must be one of {SLACK_ORDERS}, got {slack!r}")
  if not growth > 0:
    raise ValueError(f"growth must be > 0, got {growth!r}")
  init_fn = _threshold_init_fn(threshold_init)
  names = sorted(state.last_prune_mask)
  if sorted(scores) != names:
    raise ValueError(f"score layers {sorted(scores)} do not match state layers {names}")
  sizes = {k: state.last_prune_mask[k].shape[0] for k in names}
  for k in names:
    chex.assert_shape(scores[k], (sizes[k],))

  drops = {k: units_to_drop(sizes[k], p) for k in names}
  pruning = jnp.any(jnp.stack([drops[k] > 0 for k in names]))
  do_init = jnp.logical_and(pruning, jnp.logical_not(state.initialised))

  prune_mask, thresholds, invariant_counts, slack_counts = {}, {}, {}, {}
  for i, k in enumerate(names):
    score = jnp.asarray(scores[k], jnp.float32)
    m = drops[k]
    th = jnp.where(do_init, jnp.asarray(init_fn(score), jnp.float32), state.thresholds[k])
    invariant = score <= th
    dropped_last = state.last_prune_mask[k] < 0.5
    group = jnp.where(invariant, jnp.where(dropped_last, 0, 1), 2).astype(jnp.int32)
    # Random bits, not a permutation: lexsort is stable, so the rank is a permutation anyway.
    tiebreak = jax.random.bits(jax.random.fold_in(key, i), (sizes[k],), jnp.uint32)
    if slack == "lowest_score":
      secondary = jnp.where(group == 2, score, 0.0)
    else:
      secondary = jnp.zeros_like(score)
    rank = drop_rank(group, secondary, tiebreak)
    prune_mask[k] = (rank >= m).astype(jnp.float32)

    n_invariant = jnp.sum(invariant.astype(jnp.int32))
    invariant_counts[k] = n_invariant
    slack_counts[k] = jnp.maximum(m - n_invariant, 0)
    grown = jnp.where(th > 0, th * growth, _min_positive(score))
    thresholds[k] = jnp.where(n_invariant < m, grown, th)

  new_state = InvarianceState(
      thresholds=thresholds,
      initialised=jnp.logical_or(state.initialised, pruning),
      last_prune_mask=prune_mask)
  return prune_mask, new_state, InvarianceCounts(invariant_counts, slack_counts, drops)


def random_prune_mask(sizes: Mapping[str, int], p, key: jax.Array) -> dict:
  """Federated Dropout baseline: drop m_l = n_l - ceil(p n_l) units chosen at random per layer.

  Args:
    sizes: {layer: n_l}.
    p: keep fraction f32[] (may be traced).
    key: typed PRNG key.

  Returns:
    {layer: f32[n_l]} prune masks (1 = kept).
  """
  masks = {}
  for i, k in enumerate(sorted(sizes)):
    n = int(sizes[k])
    rank = jax.random.permutation(jax.random.fold_in(key, i), n).astype(jnp.int32)
    masks[k] = (rank >= units_to_drop(n, p)).astype(jnp.float32)
  return masks


def ordered_prune_mask(sizes: Mapping[str, int], p) -> dict:
  """FjORD ordered-dropout baseline: keep the first ceil(p n_l) units of every layer.

  Args:
    sizes: {layer: n_l}.
    p: keep fraction f32[] (may be traced).

  Returns:
    {layer: f32[n_l]} prune masks (1 = kept).
  """
  return {k: (jnp.arange(int(n), dtype=jnp.int32) < kept_units(int(n), p)).astype(jnp.float32)
          for k, n in sorted(sizes.items())}
