"""FLuID's server-side invariant dropout, as pure fixed-shape JAX functions (DESIGN 2.8).

`fluid` is the server-side reference CLIP is compared with: the server reads every
non-straggler's individual update (so it cannot run under SecAgg), finds the units whose weights
barely moved, and sends each straggler a sub-model without them. This module follows FLuID's
published server strategy, github.com/iwang05/FLuID at commit 206246d, file
`CIFAR10/fedDropCIFAR_android.py`, cited as `CIFAR:<line>` (its per-layer thresholds are the
general form of the rule). `FEMNIST/fedDropFem_android.py` and
`Shakespeare/fedDropShake_android.py` differ only where noted; `CIFAR10/fl_server.py` only times
the clients. Their code is not copied here; the rules are re-derived.

`server_update` call r reads the updates of round r (r = 1, 2, ...; one call per round, round 1
first) and returns the drop order of round r + 1. It follows FLuID's order of events:

  1. The drop of round r (drop_dynamic, CIFAR:795-826): with m_l the units the most-pruning
     client dropped in round r, the units it dropped become "dropped last round"
     (prevDropWeights, CIFAR:826); a layer whose invariant set already covered m_l stops
     growing its threshold for good (stopChange, CIFAR:800, 806).
  2. Growth (aggregate_fit, CIFAR:322-328): in rounds after `growth_start`, every
     `growth_every`-th round, th_l += `growth_step` in each layer that has not stopped.
  3. Invariance (find_stable, CIFAR:947-1000): client c's weight w is invariant iff
     |w_c - w_g| <= |th_l w_g|, w_g the global model broadcast at the start of round r
     (configure_fit stores it, CIFAR:227) and th_l the threshold of the unit layer being tested
     (CIFAR:976-977); a weight is invariant iff that holds for at least `vote` = 0.75 of the
     non-stragglers (CIFAR:982-984; stragglers are skipped, CIFAR:953); a unit is invariant iff
     every weight of its group is: incoming kernel column, bias and outgoing kernel row(s)
     (CIFAR:986-1000; the conv->dense flatten rows, CIFAR:1029-1035).
  4. Threshold initialisation (find_min, CIFAR:1083-1153): a unit's change is the largest
     |w_c - w_g| / |w_g| over its group and the non-stragglers; in round `init_round` (FLuID: 2)
     th_l = the smallest unit change of layer l, and in the next `init_rounds - 1` rounds it is
     averaged with that round's smallest (FLuID: round 3, (th + min) / 2, CIFAR:1139-1148).
     Until then step 3 uses `first_threshold` (FLuID's placeholder, CIFAR:169: 1.5; FEMNIST 0.1,
     Shakespeare 30) or, when None, the smallest change measured in the same round.
  5. Drop order (drop_dynamic, CIFAR:795-823): (a) invariant units dropped last round
     (defDropWeights, CIFAR:1009-1015), (b) other invariant units, (c) the shortfall, filled
     with non-invariant units; a uniform random choice inside each group (random.sample). One
     rank over (group, random bits) encodes FLuID's three branches for every m at once:
     `prune_mask = rank >= m_l` (1 = kept).

Aggregation ("coordinates are averaged over the clients that trained them", aggregate_drop,
CIFAR:1155-1269) is `clipjax.fl.server.participation_mean`; it is not repeated here.

Generalisations of FLuID's 5-client testbed (each is also noted next to its code):
  * Stragglers and keep fractions: FLuID prunes one straggler, the slowest client
    (CIFAR:349-357), whose sub-model size comes from a fixed table of duration ratios,
    p in {0.95, 0.85, 0.75, 0.65, 0.5} (CIFAR:359-373). Here the straggler set and each keep
    fraction come from the shared straggler rule (DESIGN 2.2-2.3), and every straggler draws
    from one server-side order: a straggler dropping m_l units takes the first m_l, so the drop
    sets are nested and each one is distributed as FLuID's draw for its m_l. "Dropped last
    round" is the drop set of the most-pruning client (the union of all drop sets).
  * First pruned round: FLuID's code measures the straggler first in round 2's aggregate_fit
    (`rnd > 1`, CIFAR and FEMNIST alike) and sends sub-models from round 3 on (configure_fit,
    `rnd > 2`). Here the virtual clock's round-1 times are the devices' steady times, so the
    straggler is known after round 1 and `fluid` prunes from round 2, the round CLIP and the other methods start pruning in: every
    method prunes for the same rounds. The threshold schedule (`init_round` = 2) is FLuID's.
  * Units to drop: m_l = n_l - ceil(p n_l) (`invariance.units_to_drop`, shared by all methods)
    instead of FLuID's n - int(p n) (CIFAR:793).
  * Thresholds are per layer, as in CIFAR (CIFAR:166-172). FEMNIST and Shakespeare keep one
    threshold for all layers (from layer 0's minimum, or the mean of the layers' minima) and
    stop it on layer 0 alone; their schedules are in `PRESETS`.
  * Stop rule: a layer stops once its invariant set covered the most-pruning straggler's m_l.
    CIFAR stops a layer in that case at CIFAR:806, but in the branch where the "dropped last
    round" units alone cover m_l only for layer 0 (CIFAR:799-800); here every layer is alike.
  * The last conv layer: CIFAR handles it apart (CIFAR:852-867, 1018-1047), with the threshold
    of the last dense layer left over in its loop and without priority (a); here every layer is
    treated alike.
  * The conv->dense flatten: FLuID groups rows c*h*w .. (c+1)*h*w - 1 under channel c
    (CIFAR:1033); the models here flatten NHWC, so channel c owns the rows i with i % n = c
    (`ParamSlice.tile`). LSTM units use their 4 gate columns of kernel, recurrent kernel and
    bias, their recurrent row and their row of the next layer, as FLuID's Shakespeare
    find_stable does.
  * FEMNIST keeps layer 0's invariant units listed forever once found (find_stable, "once a
    neuron is added to the list, keep it in there"); CIFAR comments that out (CIFAR:937-943) and
    Shakespeare has no such line. Not done here.
  * Client updates come as deltas: |w_c - w_g| is |delta_c|, without the rounding of
    (w_g + delta_c) - w_g.
  * No voters: nothing is invariant and nothing is measured (FLuID's vote, count >= 0.75 * 0,
    would call every unit invariant).
  * 0/0 relative changes (a zero weight that did not move) are NaN, as in NumPy, and make the
    unit's change NaN; FLuID's argsort puts NaN last (CIFAR:1133, 1140), so the minimum skips
    them; if every unit of a layer is NaN its threshold is left as it is.

References:
  Wang, Nair, Mahajan. FLuID: Mitigating Stragglers in Federated Learning using Invariant
  Dropout. NeurIPS 2023. Code: github.com/iwang05/FLuID.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.clip import invariance
from clipjax.models.units import ParamSlice, UnitSpec

Params = Any  # nested dict of arrays, as `clipjax.models.units`

VOTE = 0.75  # CIFAR:982-984: invariant for at least 75 % of the non-stragglers


@dataclasses.dataclass(frozen=True)
class FluidConfig:
  """FLuID's server-side settings (defaults: CIFAR's schedule, see `PRESETS`).

  Attributes:
    vote: Fraction of the voters for which a weight must be invariant (CIFAR:984).
    init_round: The round whose smallest unit change becomes th_l (CIFAR:1139: round 2).
    init_rounds: Rounds averaged into th_l from `init_round` on (CIFAR:1139-1148: 2).
    first_threshold: Threshold used before `init_round` has measured one (CIFAR:169); None
      uses the smallest change measured in the same round.
    growth_start: Growth only in rounds r > growth_start (CIFAR:322: 10 of 35 rounds).
    growth_every: Rounds between two growth steps (CIFAR:324: 2).
    growth_step: Additive growth of th_l (CIFAR:170: 0.2).
  """

  vote: float = VOTE
  init_round: int = 2
  init_rounds: int = 2
  first_threshold: float | None = None
  growth_start: int = 10
  growth_every: int = 2
  growth_step: float = 0.2

  def __post_init__(self):
    if not 0.0 < self.vote <= 1.0:
      raise ValueError(f"vote must be in (0, 1], got {self.vote!r}")
    for name in ("init_round", "init_rounds", "growth_every"):
      value = getattr(self, name)
      if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if int(self.growth_start) != self.growth_start or self.growth_start < 0:
      raise ValueError(f"growth_start must be an int >= 0, got {self.growth_start!r}")
    if not self.growth_step >= 0.0:
      raise ValueError(f"growth_step must be >= 0, got {self.growth_step!r}")
    if self.first_threshold is not None and not self.first_threshold >= 0.0:
      raise ValueError(f"first_threshold must be None or >= 0, got {self.first_threshold!r}")


# FLuID's per-dataset schedules: (first_threshold, growth_step, growth_every, growth_start,
# FLuID's total rounds). CIFAR: CIFAR:169-170 and 319-328. FEMNIST (fedDropFem_android.py,
# __init__ and aggregate_fit): 0.1, +0.01 every 10 rounds after round 125 of 250. Shakespeare
# (fedDropShake_android.py, same places): 30, +1.0 every 3 rounds after round 20 of 60.
PRESETS = {
    "cifar10": (1.5, 0.2, 2, 10, 35),
    "femnist": (0.1, 0.01, 10, 125, 250),
    "shakespeare": (30.0, 1.0, 3, 20, 60),
}


def preset(dataset: str, num_rounds: int | None = None) -> FluidConfig:
  """FLuID's schedule for `dataset`, its growth start scaled to a run of `num_rounds`.

  FLuID starts growing at a fixed fraction of its runs (10/35, 125/250, 20/60); a run of
  another length keeps that fraction. None keeps FLuID's absolute round.

  Raises:
    ValueError: for an unknown dataset or num_rounds < 1.
  """
  if dataset not in PRESETS:
    raise ValueError(f"no FLuID preset for dataset {dataset!r}; known: {sorted(PRESETS)}")
  first, step, every, start, total = PRESETS[dataset]
  if num_rounds is not None:
    if int(num_rounds) != num_rounds or num_rounds < 1:
      raise ValueError(f"num_rounds must be an int >= 1, got {num_rounds!r}")
    start = int(round(start * num_rounds / total))
  return FluidConfig(first_threshold=first, growth_step=step, growth_every=every,
                     growth_start=start)


@flax.struct.dataclass
class ServerChoice:
  """The server's drop order for the next round's stragglers.

  Attributes:
    drop_rank: {layer: int32[n_l]} a permutation of 0..n_l-1; a client dropping m_l units
      keeps `rank >= m_l`.
    invariant: {layer: int32[]} invariant units (the head of the order).
  """

  drop_rank: dict
  invariant: dict


@flax.struct.dataclass
class FluidState:
  """FLuID's server state.

  Attributes:
    threshold: {layer: f32[]} th_l (changeThreshold, CIFAR:169).
    initialised: bool[], True once `init_round` has measured th_l.
    round: int32[] `server_update` calls so far (FLuID's rnd of the last call).
    growth_counter: int32[] rounds since the last growth step (roundCounter, CIFAR:171).
    stopped: {layer: bool[]} growth stopped for good (stopChange, CIFAR:172).
    prev_dropped: {layer: bool[n_l]} units the most-pruning client dropped in the last round
      that pruned (prevDropWeights, CIFAR:163).
    choice: the `ServerChoice` of the last call (before any: index order, nothing invariant).
  """

  threshold: dict
  initialised: jax.Array
  round: jax.Array
  growth_counter: jax.Array
  stopped: dict
  prev_dropped: dict
  choice: ServerChoice


class FluidCounts(NamedTuple):
  """Per layer counts of one `server_update` call.

  Attributes:
    invariant: {layer: int32[]} invariant units found in this round's updates.
    fill: {layer: int32[]} random non-invariant units the most-pruning client of this round
      had to drop (max(m_l - invariant units of the order it used, 0)).
    threshold: {layer: f32[]} the threshold this round's invariance used.
  """

  invariant: dict
  fill: dict
  threshold: dict


def init_state(unit_spec: UnitSpec, config: FluidConfig = FluidConfig()) -> FluidState:
  """Fresh state: threshold `first_threshold` (0 when None), nothing dropped, round 0."""
  first = 0.0 if config.first_threshold is None else float(config.first_threshold)
  names = [layer.name for layer in unit_spec]
  return FluidState(
      threshold={k: jnp.asarray(first, jnp.float32) for k in names},
      initialised=jnp.zeros((), bool),
      round=jnp.zeros((), jnp.int32),
      growth_counter=jnp.zeros((), jnp.int32),
      stopped={k: jnp.zeros((), bool) for k in names},
      prev_dropped={layer.name: jnp.zeros((layer.size,), bool) for layer in unit_spec},
      choice=ServerChoice(
          drop_rank={layer.name: jnp.arange(layer.size, dtype=jnp.int32) for layer in unit_spec},
          invariant={k: jnp.zeros((), jnp.int32) for k in names}))


def _leaf(tree: Params, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _per_unit(x: jax.Array, s: ParamSlice, n: int, reduce) -> jax.Array:
  """Reduces a parameter-shaped array to [n] over each unit's coordinates of slice `s`."""
  x = jnp.moveaxis(x, s.axis, 0).reshape(s.tile * n, -1)
  return reduce(reduce(x, axis=1).reshape(s.tile, n), axis=0)


def _slice_arrays(s: ParamSlice, global_params: Params, client_deltas: Params, num: int):
  g = jnp.asarray(_leaf(global_params, s.path), jnp.float32)
  d = jnp.asarray(_leaf(client_deltas, s.path), jnp.float32)
  chex.assert_shape(d, (num, *g.shape))
  return g, d


def invariant_units(unit_spec: UnitSpec, global_params: Params, client_deltas: Params,
                    voters: jax.Array, threshold: Mapping[str, jax.Array],
                    vote: float = VOTE) -> dict:
  """FLuID's invariant units of one round (find_stable, CIFAR:947-1000).

  Args:
    unit_spec: The model's unit spec.
    global_params: w_g, the global model the clients started the round from.
    client_deltas: Stacked client updates w_c - w_g, leaves [C, ...].
    voters: bool[C], the non-stragglers whose updates may be read.
    threshold: {layer: f32[]} th_l.
    vote: Fraction of the voters that must agree.

  Returns:
    {layer: bool[n_l]}: True where every weight of the unit's group (incoming, bias,
    outgoing) has |w_c - w_g| <= |th_l w_g| for at least `vote` of the voters.
  """
  voters = jnp.asarray(voters, bool)
  num = voters.shape[0]
  n_voters = jnp.sum(voters.astype(jnp.int32))
  # CIFAR:983-984: count >= 0.75 * (#clients - #stragglers). With no voter nothing is known,
  # so nothing is invariant (FLuID's vote would pass vacuously).
  needed = vote * n_voters.astype(jnp.float32)
  out = {}
  for layer in unit_spec:
    th = jnp.asarray(threshold[layer.name], jnp.float32)
    unit_ok = n_voters > 0
    for s in layer.slices:
      g, d = _slice_arrays(s, global_params, client_deltas, num)
      # CIFAR:976-977, per client; the layer's own th_l even on a tensor that another layer
      # reads with its own threshold (each layer's pass has its own `difference`).
      ok = jnp.abs(d) <= jnp.abs(th * g)
      votes = jnp.tensordot(voters.astype(jnp.int32), ok.astype(jnp.int32), axes=1)
      # CIFAR:986-996 (and 1029-1033 for the flatten rows): all of the unit's weights.
      unit_ok = unit_ok & _per_unit(votes.astype(jnp.float32) >= needed, s, layer.size, jnp.all)
    out[layer.name] = jnp.broadcast_to(unit_ok, (layer.size,))  # CIFAR:1000
  return out


def unit_changes(unit_spec: UnitSpec, global_params: Params, client_deltas: Params,
                 voters: jax.Array) -> dict:
  """Each unit's largest relative change over its group and the voters (find_min).

  CIFAR:1083-1131: max over voters of |w_c - w_g| / |w_g| per weight (accumulated from 0,
  NaN for 0/0 propagates), then the max over the unit's group.

  Returns:
    {layer: f32[n_l]}.
  """
  voters = jnp.asarray(voters, bool)
  num = voters.shape[0]
  out = {}
  for layer in unit_spec:
    per_slice = []
    for s in layer.slices:
      g, d = _slice_arrays(s, global_params, client_deltas, num)
      rel = jnp.abs(d) / jnp.abs(g)
      rel = jnp.where(voters.reshape((num,) + (1,) * g.ndim), rel, 0.0)  # CIFAR:1085-1086
      per_slice.append(_per_unit(jnp.max(rel, axis=0), s, layer.size, jnp.max))
    out[layer.name] = jnp.max(jnp.stack(per_slice), axis=0)  # CIFAR:1124-1131
  return out


def units_dropped(unit_spec: UnitSpec, keep_fractions: jax.Array) -> dict:
  """{layer: int32[]} units the most-pruning client drops, max_c n_l - ceil(p_c n_l)."""
  keep_fractions = jnp.asarray(keep_fractions, jnp.float32)
  return {layer.name: jnp.max(jax.vmap(lambda p, n=layer.size: invariance.units_to_drop(n, p))(
      keep_fractions)) for layer in unit_spec}


def server_update(state: FluidState, unit_spec: UnitSpec, global_params: Params,
                  client_deltas: Params, voters: jax.Array, dropped: Mapping[str, jax.Array],
                  key: jax.Array, *, config: FluidConfig = FluidConfig()
                  ) -> tuple[ServerChoice, FluidState, FluidCounts]:
  """One round of FLuID's server: the drop order for the next round (see module docstring).

  Args:
    state: `FluidState` after the previous round's call.
    unit_spec: The model's unit spec.
    global_params: w_g, the global model broadcast at the start of this round.
    client_deltas: Stacked updates of this round's clients, leaves [C, ...].
    voters: bool[C], this round's non-stragglers that reported (their updates are read).
    dropped: {layer: int32[]} units the most-pruning client dropped this round (0 where none
      pruned), e.g. `units_dropped(unit_spec, keep_fractions)`; it was applied to
      `state.choice`.
    key: Typed PRNG key of this round (random order inside the drop groups).
    config: `FluidConfig`.

  Returns:
    (`ServerChoice` for the next round, new state, `FluidCounts`).

  Raises:
    ValueError: if `dropped` does not name exactly the spec's layers.
  """
  names = [layer.name for layer in unit_spec]
  if sorted(dropped) != sorted(names):
    raise ValueError(f"dropped names layers {sorted(dropped)}, the unit spec has {sorted(names)}")
  chex.assert_rank(voters, 1)
  r = state.round + 1

  # 1. This round's drop, made from state.choice (drop_dynamic of round r): what was dropped
  # is "dropped last round" (CIFAR:826); a layer whose invariant set covered the most-pruning
  # client's m_l stops growing (CIFAR:800, 806; see the module docstring for layer 0).
  stopped, prev_dropped, fill = {}, {}, {}
  for layer in unit_spec:
    k = layer.name
    m = jnp.asarray(dropped[k], jnp.int32)
    had = state.choice.invariant[k]
    stopped[k] = state.stopped[k] | ((m > 0) & (had >= m))
    # FLuID keeps prevDropWeights through rounds without a straggler; so does this.
    prev_dropped[k] = jnp.where(m > 0, state.choice.drop_rank[k] < m, state.prev_dropped[k])
    fill[k] = jnp.maximum(m - had, 0)

  # 2. Additive growth on FLuID's schedule (CIFAR:322-328), before this round's invariance.
  growing = r > config.growth_start
  counter = jnp.where(growing, state.growth_counter + 1, state.growth_counter)
  grow = growing & (counter >= config.growth_every)
  counter = jnp.where(grow, 0, counter)
  threshold = {k: jnp.where(grow & ~stopped[k], state.threshold[k] + config.growth_step,
                            state.threshold[k]).astype(jnp.float32) for k in names}

  # 3. Invariance with the threshold as it stands (find_stable runs before find_min,
  # CIFAR:335-340); before initialisation FLuID's placeholder (CIFAR:169), or, without one,
  # this round's smallest change.
  changes = unit_changes(unit_spec, global_params, client_deltas, voters)
  smallest = {k: jnp.nanmin(changes[k]) for k in names}  # NaN last in argsort: CIFAR:1133
  if config.first_threshold is None:
    before = {k: jnp.where(jnp.isnan(smallest[k]), 0.0, smallest[k]) for k in names}
  else:
    before = threshold
  used = {k: jnp.where(state.initialised, threshold[k], before[k]) for k in names}
  invariant = invariant_units(unit_spec, global_params, client_deltas, voters, used,
                              vote=config.vote)

  # 4. Initialisation (CIFAR:1139-1148): th_l = min in round init_round, then the running mean
  # of the minima over init_rounds rounds ((th + min) / 2 in FLuID's round 3).
  since = r - config.init_round
  in_init = (since >= 0) & (since < config.init_rounds)
  for k in names:
    mean = threshold[k] + (smallest[k] - threshold[k]) / (since + 1).astype(jnp.float32)
    new = jnp.where(since == 0, smallest[k], mean)
    threshold[k] = jnp.where(in_init & ~jnp.isnan(smallest[k]), new, threshold[k])

  # 5. Drop order (drop_dynamic, CIFAR:795-823): (a) invariant and dropped last round
  # (defDropWeights, CIFAR:1011-1015), (b) other invariant, (c) the shortfall; random.sample
  # inside each, i.e. random bits as the only tie-break. The stable lexsort makes the rank a
  # permutation, so `rank >= m` drops exactly m units for every m (generalisation: every
  # straggler takes the head of this one order, see the module docstring).
  ranks, counts = {}, {}
  for i, layer in enumerate(unit_spec):
    k = layer.name
    group = jnp.where(invariant[k], jnp.where(prev_dropped[k], 0, 1), 2).astype(jnp.int32)
    bits = jax.random.bits(jax.random.fold_in(key, i), (layer.size,), jnp.uint32)
    ranks[k] = invariance.drop_rank(group, jnp.zeros((layer.size,), jnp.float32), bits)
    counts[k] = jnp.sum(invariant[k].astype(jnp.int32))

  choice = ServerChoice(drop_rank=ranks, invariant=counts)
  new_state = FluidState(
      threshold=threshold,
      initialised=state.initialised | (r >= config.init_round),
      round=r.astype(jnp.int32),
      growth_counter=counter.astype(jnp.int32),
      stopped=stopped,
      prev_dropped=prev_dropped,
      choice=choice)
  return choice, new_state, FluidCounts(invariant=counts, fill=fill, threshold=used)


def client_mask(choice: ServerChoice, p) -> tuple[dict, jax.Array, jax.Array]:
  """ONE client's prune mask from the server's order (vmap over clients; p may be traced).

  Args:
    choice: The `ServerChoice` of the previous `server_update`.
    p: Keep fraction f32[] in [0, 1]; drops m_l = n_l - ceil(p n_l) units per layer.

  Returns:
    ({layer: f32[n_l]} prune mask (1 = kept), int32[] invariant units dropped,
    int32[] non-invariant (fill) units dropped), counts summed over layers.
  """
  masks = {}
  n_invariant = jnp.zeros((), jnp.int32)
  n_fill = jnp.zeros((), jnp.int32)
  for k in sorted(choice.drop_rank):
    rank = choice.drop_rank[k]
    m = invariance.units_to_drop(rank.shape[0], p)
    masks[k] = (rank >= m).astype(jnp.float32)
    n_invariant = n_invariant + jnp.minimum(choice.invariant[k], m)
    n_fill = n_fill + jnp.maximum(m - choice.invariant[k], 0)
  return masks, n_invariant, n_fill


def client_masks(drop_rank: Mapping[str, jax.Array], keep_fractions: jax.Array) -> dict:
  """Prune masks of C clients from one server order.

  Args:
    drop_rank: {layer: int32[n_l]} (`ServerChoice.drop_rank`).
    keep_fractions: f32[C] keep fractions (1 for clients that keep everything).

  Returns:
    {layer: f32[C, n_l]}, client c keeping the units with rank >= n_l - ceil(p_c n_l).
  """
  keep_fractions = jnp.asarray(keep_fractions, jnp.float32)
  chex.assert_rank(keep_fractions, 1)

  def one(p):
    return {k: (r >= invariance.units_to_drop(r.shape[0], p)).astype(jnp.float32)
            for k, r in drop_rank.items()}

  return jax.vmap(one)(keep_fractions)


def make_server(unit_spec: UnitSpec, dataset: str, num_rounds: int):
  """FLuID's server side of a run: `(init, update)` with its dataset's schedule scaled to the
  run's length (`preset`).

  `init() -> FluidState`; `update(state, params, deltas, voters, keep, key) -> (state, metrics)`
  jits `server_update` and reports its counts as the round record's `fluid_*` fields.
  """
  config = preset(dataset, num_rounds)
  step = jax.jit(lambda st, params, deltas, voters, dropped, key: server_update(
      st, unit_spec, params, deltas, voters, dropped, key, config=config))

  def update(state, params, deltas, voters, keep, key):
    dropped = units_dropped(unit_spec, keep)
    _, state, counts = step(state, params, deltas, voters, dropped, key)
    host = jax.device_get(counts)
    return state, {"fluid_invariant_units": {k: int(v) for k, v in host.invariant.items()},
                   "fluid_fill_units": {k: int(v) for k, v in host.fill.items()},
                   "fluid_threshold": {k: float(v) for k, v in host.threshold.items()}}

  return (lambda: init_state(unit_spec, config)), update


_KEY_STREAM = 0xF1D  # FLuID's server randomness, apart from every other use of the run's key


def server_round(update, state: FluidState, params: Params, deltas: list, is_straggler,
                 survivors, keep, base_key: jax.Array, round_index: int):
  """FLuID's server stage of a round: its choice for the next round's stragglers, from this
  round's updates of the non-stragglers that reported (the voters).

  Args:
    update: the run's `make_server(...)[1]`.
    state: FLuID's state.
    params: w(t), the model the clients trained from.
    deltas: the round's updates, one pytree per chunk with a leading client axis.
    is_straggler, survivors: bool[C] this round's stragglers and reporting clients.
    keep: f32[C] this round's keep fractions.
    base_key: the run's typed key; round_index: 0-based.

  Returns:
    (FLuID's new state, the record's `fluid_*` fields).
  """
  voters = jnp.asarray(~np.asarray(is_straggler) & np.asarray(survivors))
  key = jax.random.fold_in(jax.random.fold_in(base_key, _KEY_STREAM), round_index)
  all_deltas = deltas[0] if len(deltas) == 1 else jax.tree.map(
      lambda *a: jnp.concatenate(a), *deltas)
  return update(state, params, all_deltas, voters, jnp.asarray(keep), key)
