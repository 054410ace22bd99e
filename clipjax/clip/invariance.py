"""Invariance scores to unit prune masks: CLIP's client-side invariant dropout (DESIGN 2.4).

For ONE client (vmap over clients): each prunable layer l with n_l units drops exactly
m_l = n_l - ceil(p n_l) units, p the client's keep fraction (may be traced). A unit is invariant
iff its score (relative change of the global model between rounds) is <= the layer threshold
th_l. Units are dropped in this order:

  (a) invariant units this client dropped last round (keeps its sub-model stable),
  (b) other invariant units,
  (c) slack: non-invariant units, by ascending score (`slack="lowest_score"`) or at random
      (`slack="random"`).

Inside (a) and (b) units go by ascending score (most invariant first), as do the slack units
under "lowest_score"; equal scores (and all slack units under "random") go in a keyed random
order. The order is a rank over the composite key (group, score, random bits), a permutation of
0..n_l-1 (all layers share one sort, the layer being the leading key), so
`prune_mask = rank >= m_l` (1 = kept) drops exactly m_l units for any traced m_l, ties included.

Threshold state (per client, per layer), a band controller on the invariant count:

  init    in the client's first pruning round (some m_l > 0), every layer's
          th_l = threshold_init(scores_l) (default `band`: the score of the ceil(1.5 m_l)-th
          lowest unit, mid-band from the start; `min`, the smallest positive score, is how
          FLuID starts);
  mask    this round's invariant set and prune mask use th_l as it stands;
  update  from this round's invariant count k_l = #{j: s_j <= th_l}, for the next round:
            m_l > 0 and k_l < m_l:    th_l <- clip(th_l * growth, min_pos(s), max_finite(s))
            m_l > 0 and k_l > 2 m_l:  th_l <- th_l / growth
            otherwise (m_l = 0 included): th_l unchanged;
          a non-finite result becomes 0.

Why both ways: relative changes shrink as the model converges, so a threshold that only grows
soon calls almost every unit invariant (75-99 % after one growth step in runs of the grow-only
rule), and with a random order inside the invariant set the choice decays into sticky random
dropout. Dividing when more than 2 m_l units are invariant keeps the invariant set near the
m_l .. 2 m_l lowest-score units. Scores that shrink by a factor d < 1 per round are tracked
while d * growth > 1 (the count settles near 2 m_l: it creeps up in rounds without change and
one division pulls it back; steady scores settle at m_l from below); faster decay outruns one
division a round and the count drifts up until the decay slows.

Why this order and these guards: the count needs a threshold, so the round's own threshold
decides both the mask and the next threshold (one pass, no second count). A client or layer
that prunes nothing (m_l = 0, e.g. p = 1) gives no evidence about the band, so its threshold is
frozen instead of shrinking every round (any invariant unit is "more than 2 * 0"). A
threshold that shrank below the smallest positive score, even to 0 by float underflow (possible
while more than 2 m_l scores are exactly 0), returns to that score in the first round with too
few invariant units; growth stops at the largest finite score (all units invariant), so
non-finite scores cannot push th_l to inf, from which no division returns.

Default growth 1.2: our choice, not the paper's; FLuID's public CIFAR-10 code raises its
thresholds additively by 0.2 from 1.5 (about +13 %), and 1.2 per short round reaches the m-th
score within a few rounds without jumping far past it.

Counts (`InvarianceCounts`) are those of the units the client drops: for a layer with m_l = 0
the invariant, slack and dropped-invariant counts are 0.

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
THRESHOLD_INITS = ("min", "median", "mean", "band")
REFERENCES = ("last_seen", "server")  # what a client scores w(t) against (`clip.reference`, DESIGN 2.9)
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
  """Per layer int32[] counts of one client's round; all 0 in a layer with m_l = 0.

  Attributes:
    invariant: {layer: int32[]} units with score <= th_l (0 where nothing is dropped).
    slack: {layer: int32[]} non-invariant units dropped, max(m_l - invariant, 0).
    dropped: {layer: int32[]} units dropped, m_l.
    dropped_invariant: {layer: int32[]} invariant units dropped, min(invariant, m_l).
  """

  invariant: dict
  slack: dict
  dropped: dict
  dropped_invariant: dict


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
  """Smallest finite positive score, 0 if there is none."""
  smallest = jnp.min(jnp.where(score > 0, score, jnp.inf))
  return jnp.where(jnp.isfinite(smallest), smallest, 0.0)


def _max_finite(score: jax.Array) -> jax.Array:
  """Largest finite score, -inf if there is none."""
  return jnp.max(jnp.where(jnp.isfinite(score), score, -jnp.inf))


def _next_threshold(th: jax.Array, score: jax.Array, n_invariant: jax.Array, m: jax.Array,
                   growth: float) -> jax.Array:
  """Band rule for one layer: the threshold of the next round (see the module docstring).

  Args:
    th: f32[] this round's threshold.
    score: f32[n] this round's scores.
    n_invariant: int32[] #{score <= th}.
    m: int32[] units dropped this round.
    growth: factor > 1.

  Returns:
    f32[]: th * growth (clipped to [min positive, max finite score]) if 0 < m and
    n_invariant < m; th / growth if 0 < m and n_invariant > 2 m; th otherwise; 0 in place
    of a non-finite result.
  """
  grown = jnp.minimum(jnp.maximum(th * growth, _min_positive(score)), _max_finite(score))
  grown = jnp.where(jnp.isfinite(grown), grown, th)  # no finite score: nothing to aim at
  shrunk = th / growth
  new = jnp.where(n_invariant < m, grown, jnp.where(n_invariant > 2 * m, shrunk, th))
  new = jnp.where(m > 0, new, th)
  # A non-finite threshold (e.g. from a custom threshold_init) never recovers by * or /:
  # reset it to 0, which the next round with too few invariant units lifts to min_pos.
  return jnp.where(jnp.isfinite(new), new, 0.0).astype(jnp.float32)


def _band_init(score: jax.Array, m) -> jax.Array:
  """The score of the ceil(1.5 m)-th lowest unit: the middle of the [m, 2m] band."""
  m = jnp.asarray(m, jnp.int32)
  n = score.shape[0]
  k = jnp.clip(jnp.ceil(jnp.float32(1.5) * m.astype(jnp.float32)).astype(jnp.int32), 1, n) - 1
  finite = jnp.where(jnp.isfinite(score), score, jnp.inf)
  return jnp.sort(finite)[k]


def _threshold_init_fn(threshold_init) -> ThresholdInit:
  if callable(threshold_init):
    return threshold_init
  if threshold_init == "band":
    return _band_init
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
    threshold_init: str | ThresholdInit = "band",
    threshold_scale: float = 1.0,
) -> tuple[dict, InvarianceState, InvarianceCounts]:
  """One round of client-side invariant dropout for ONE client.

  Args:
    state: this client's `InvarianceState`.
    scores: {layer: f32[n_l]} invariance scores (e.g. `clipjax.models.units.unit_scores`).
    p: keep fraction, f32[] in [0, 1] (may be traced); p = 1 prunes nothing.
    key: typed PRNG key of this client and round.
    growth: threshold factor (> 1): th_l * growth after a round with fewer than m_l invariant
      units, th_l / growth after one with more than 2 m_l (only where m_l > 0).
    slack: "lowest_score" or "random" order of the non-invariant units.
    threshold_init: "band" (the default, DESIGN 2.4: the score of the ceil(1.5 m_l)-th
      lowest unit, mid-band from the first round), "min" (smallest positive score, FLuID's
      start), "median", "mean", or a callable
      f32[n] -> f32[].
    threshold_scale: the client calls a unit invariant when its score is <= th_l x this
      (issue 25's sensitivity study; default 1). The band controller still tracks th_l from
      the unscaled count, so the scale moves the invariant set around the band value.

  Returns:
    (prune_mask {layer: f32[n_l]}, new state, `InvarianceCounts`).

  Raises:
    ValueError: for unknown slack / threshold_init, growth <= 1, or layers not matching the state.
  """
  if slack not in SLACK_ORDERS:
    raise ValueError(f"slack must be one of {SLACK_ORDERS}, got {slack!r}")
  if not growth > 1:
    raise ValueError(f"growth must be > 1, got {growth!r}")
  if not threshold_scale > 0:
    raise ValueError(f"threshold_scale must be > 0, got {threshold_scale!r}")
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

  # One sort for all layers (XLA:CPU compiles it much faster than one sort a layer): the primary
  # key is layer * 3 + group, so layer i's units take the ranks offsets[i] .. offsets[i+1]-1
  # and rank - offsets[i] is the rank inside the layer. Tiebreak: random bits, not a
  # permutation (the sort is stable, so the rank is a permutation anyway).
  offsets = [0]
  for k in names:
    offsets.append(offsets[-1] + sizes[k])
  prune_mask, thresholds = {}, {}
  invariant_counts, slack_counts, dropped_invariant = {}, {}, {}
  groups, secondaries = [], []
  for i, k in enumerate(names):
    score = jnp.asarray(scores[k], jnp.float32)
    m = drops[k]
    first = init_fn(score, m) if threshold_init == "band" else init_fn(score)
    th = jnp.where(do_init, jnp.asarray(first, jnp.float32), state.thresholds[k])
    invariant = score <= th * threshold_scale
    dropped_last = state.last_prune_mask[k] < 0.5
    group = jnp.where(invariant, jnp.where(dropped_last, 0, 1), 2).astype(jnp.int32)
    groups.append(group + 3 * i)
    # Ascending score inside (a) and (b) (most invariant first), and in (c) for "lowest_score".
    secondaries.append(score if slack == "lowest_score" else jnp.where(group == 2, 0.0, score))

    n_invariant = jnp.sum(invariant.astype(jnp.int32))
    n_band = n_invariant if threshold_scale == 1.0 else jnp.sum((score <= th).astype(jnp.int32))
    thresholds[k] = _next_threshold(th, score, n_band, m, growth)
    invariant_counts[k] = jnp.where(m > 0, n_invariant, 0)
    slack_counts[k] = jnp.maximum(m - n_invariant, 0)
    dropped_invariant[k] = jnp.minimum(invariant_counts[k], m)

  tiebreak = jax.random.bits(key, (offsets[-1],), jnp.uint32)
  rank = drop_rank(jnp.concatenate(groups), jnp.concatenate(secondaries), tiebreak)
  for i, k in enumerate(names):
    layer_rank = rank[offsets[i]:offsets[i + 1]] - offsets[i]
    prune_mask[k] = (layer_rank >= drops[k]).astype(jnp.float32)

  new_state = InvarianceState(
      thresholds=thresholds,
      initialised=jnp.logical_or(state.initialised, pruning),
      last_prune_mask=prune_mask)
  counts = InvarianceCounts(invariant_counts, slack_counts, drops, dropped_invariant)
  return prune_mask, new_state, counts


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


def lowest_score_prune_mask(scores: Mapping[str, jax.Array], p, key: jax.Array) -> dict:
  """A criterion's mask: drop the m_l = n_l - ceil(p n_l) lowest-scoring units of each layer.

  The rule of the criteria that score units once and keep the best (`magnitude`, the `taylor`
  oracle; issue 25): no threshold, no state. Equal scores go in a keyed random order.

  Args:
    scores: {layer: f32[n_l]}, larger = more worth keeping.
    p: keep fraction f32[] (may be traced).
    key: typed PRNG key.

  Returns:
    {layer: f32[n_l]} prune masks (1 = kept).
  """
  masks = {}
  for i, k in enumerate(sorted(scores)):
    score = jnp.asarray(scores[k], jnp.float32)
    n = score.shape[0]
    tiebreak = jax.random.bits(jax.random.fold_in(key, i), (n,), jnp.uint32)
    rank = drop_rank(jnp.zeros((n,), jnp.int32), score, tiebreak)
    masks[k] = (rank >= units_to_drop(n, p)).astype(jnp.float32)
  return masks
