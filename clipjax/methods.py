"""The methods: which units each client keeps, as one pure, jittable mask step.

Every method runs the same full-shape masked training; they differ in which units each
client keeps and in which protocol steps they need (DESIGN 2.8). The registry `METHODS`
holds, per name, a `Method`:

* `fedavg`: everybody keeps everything; no time broadcast.
* `random`: Federated Dropout (Caldas et al. 2018), random units at the straggler's p.
* `ordered`: FjORD (Horvath et al., NeurIPS 2021), the first ceil(p n) units of each layer.
* `magnitude`: the units whose parameter groups have the smallest norm ||w|| are dropped
  (issue 25's criterion study; w(t) only, nothing else to compute or reveal).
* `taylor`: an ORACLE for issue 25's study: the units with the smallest first-order Taylor
  importance |sum w dL/dw| on the client's own data (`clipjax.clip.importance`) are dropped.
  A real client would need an extra backward pass before training; the clock does not charge it.
* `fluid`: FLuID (Wang et al., NeurIPS 2023): the server scores units from the
  non-stragglers' individual updates (`clipjax.fluid`), sends each straggler its
  sub-model and averages each coordinate over the clients that trained it. It reads
  individual updates and times in the clear, so it cannot run under SecAgg: an insecure
  upper reference, compared with `fedavg` without SecAgg (`PLAIN_REFERENCE`).
* `clip_compute` / `clip_network`: CLIP, invariant units scored by each client from the
  change of the global model between its last two copies, w(t) vs w(t-1) (DESIGN 2.4).

`magnitude` and `taylor` are not methods of the paper; they exist to test CLIP's criterion.
The keep fraction p per client comes from the straggler decision (DESIGN 2.2-2.3): CLIP's
and the secure baselines' through the sealed time broadcast, `fluid`'s from the times the
server sees; the baselines use CLIP's compute-aware p, as DESIGN 2.8 asks.

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv:2510.16694, 2025.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp

from clipjax import fluid as fluid_lib
from clipjax.clip import importance, invariance
from clipjax.models import units

PyTree = Any

PRUNE_RULES = ("none", "random", "ordered", "client_invariance", "server_invariance",
               "magnitude", "taylor_oracle")
# Rules that drop each layer's lowest-scoring units by a score computed this round.
SCORE_RULES = ("magnitude", "taylor_oracle")
# How many of a client's examples the `taylor` oracle's gradient is taken on (spread evenly
# over its data, `importance.spread_examples`).
IMPORTANCE_EXAMPLES = 64


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's static choices.

  Attributes:
    name: registry name.
    prune_rule: which units a straggler drops, one of `PRUNE_RULES`.
    keep_rule: how p is chosen ("clip_compute" or "clip_network", DESIGN 2.3).
    broadcasts: clients learn their peers' times through the sealed broadcast.
    secagg_compatible: may run under SecAgg.
    aggregation: its default aggregation rule (`clipjax.fl.aggregation.AGGREGATIONS`).
    server_prunes: the server sends each straggler its sub-model (in the clear).
  """

  name: str
  prune_rule: str
  keep_rule: str = "clip_compute"
  broadcasts: bool = True
  secagg_compatible: bool = True
  aggregation: str = "padded"
  server_prunes: bool = False

  @property
  def prunes(self) -> bool:
    return self.prune_rule != "none"


METHODS = {m.name: m for m in (
    Method("fedavg", "none", broadcasts=False),
    Method("random", "random"),
    Method("ordered", "ordered"),
    Method("fluid", "server_invariance", broadcasts=False, secagg_compatible=False,
           aggregation="participation_weighted", server_prunes=True),
    Method("clip_compute", "client_invariance"),
    Method("clip_network", "client_invariance", keep_rule="clip_network"),
    Method("magnitude", "magnitude"),
    Method("taylor", "taylor_oracle"),
)}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; choose one of {tuple(METHODS)}.")
  return METHODS[name]


# A run name, not a method: `fedavg` without SecAgg, the reference of the methods that cannot run
# under SecAgg (`fluid`), so that the protocol's cost and the pruning's gain are not confused
# (DESIGN 2.8). Sweeps and comparisons add it wherever such a method runs.
PLAIN_REFERENCE = "fedavg_plain"


def base_method(name: str) -> str:
  """The method (`METHODS` name) a run name runs: `fedavg` for `PLAIN_REFERENCE`."""
  return "fedavg" if name == PLAIN_REFERENCE else name


def runs_without_secagg(name: str) -> bool:
  """Whether the run name runs without SecAgg: `PLAIN_REFERENCE` and the methods that are not
  `secagg_compatible` (`fluid`)."""
  return name == PLAIN_REFERENCE or (name in METHODS and not METHODS[name].secagg_compatible)


def with_plain_reference(names) -> list[str]:
  """The run names `names` (in their order) with `PLAIN_REFERENCE` inserted just before the
  first method that cannot run under SecAgg, unless it is there already or no such method is.

  `("fedavg", "fluid", "clip_compute")` -> `["fedavg", "fedavg_plain", "fluid", "clip_compute"]`.
  """
  names = list(names)
  insecure = [n for n in names if n in METHODS and not METHODS[n].secagg_compatible]
  if insecure and PLAIN_REFERENCE not in names:
    names.insert(names.index(insecure[0]), PLAIN_REFERENCE)
  return names


def reference_run(secure: bool, names) -> str | None:
  """The run a method's run is measured against, among the run names `names`:
  `PLAIN_REFERENCE` for a run without SecAgg when there is one, else `fedavg` (None without)."""
  if not secure and PLAIN_REFERENCE in names:
    return PLAIN_REFERENCE
  return "fedavg" if "fedavg" in names else None


@flax.struct.dataclass
class PrunedOutput:
  """One round of masked training for all clients (leading axis C everywhere)."""

  delta: PyTree                 # params-shaped, zero at pruned coordinates
  param_prune_mask: PyTree      # params-shaped 0/1 (None for fedavg)
  kept_units: dict              # {layer: int32[C]}
  kept_params: jax.Array        # int32[C], parameters each client trained
  invariant_units: jax.Array    # int32[C], summed over layers (0 for a client keeping all)
  slack_units: jax.Array        # int32[C]
  loss_sum: jax.Array
  num_seen: jax.Array
  num_steps: jax.Array
  clip_state: Any               # per-client invariance state, [C]


def init_clip_state(unit_spec: units.UnitSpec, num_clients: int):
  """Per-client invariance state, stacked over C clients."""
  sizes = {layer.name: layer.size for layer in unit_spec}
  return invariance.replicate_state(invariance.init_state(sizes), num_clients)


def _client_masks(method: Method, unit_spec, scores, server_choice, clip_state, p, key, *,
                  growth, slack, threshold_init, threshold_scale=1.0):
  """Unit masks, new state, invariant and slack counts of ONE client (p traced)."""
  sizes = {layer.name: layer.size for layer in unit_spec}
  zero = jnp.zeros((), jnp.int32)
  if method.prune_rule == "random":
    return invariance.random_prune_mask(sizes, p, key), clip_state, zero, zero
  if method.prune_rule == "ordered":
    return invariance.ordered_prune_mask(sizes, p), clip_state, zero, zero
  if method.prune_rule in SCORE_RULES:
    return invariance.lowest_score_prune_mask(scores, p, key), clip_state, zero, zero
  if method.prune_rule == "server_invariance":
    masks, inv, slk = fluid_lib.client_mask(server_choice, p)
    return masks, clip_state, inv, slk
  prune_mask, new_state, counts = invariance.update(clip_state, scores, p, key, growth=growth,
                                                    slack=slack, threshold_init=threshold_init,
                                                    threshold_scale=threshold_scale)
  invariant = sum(jnp.asarray(v, jnp.int32) for v in counts.invariant.values())
  slack_count = sum(jnp.asarray(v, jnp.int32) for v in counts.slack.values())
  return prune_mask, new_state, invariant, slack_count


def make_scorer(unit_spec: units.UnitSpec, kind: str = "relative_l2"):
  """Jitted `score(params, reference) -> {layer: f32[n]}`: CLIP's invariance scores of the
  global model `params` against the model a client received before it (`units.unit_scores`).
  """
  return jax.jit(lambda params, reference: units.unit_scores(unit_spec, params, reference,
                                                             kind=kind))


def make_masks(method: Method, unit_spec: units.UnitSpec, *,
               growth: float = invariance.DEFAULT_GROWTH, slack: str = "lowest_score",
               threshold_init: str = "band", threshold_scale: float = 1.0):
  """Builds the pure, jittable mask step of one round for all clients.

  Returns:
    `masks(params, scores, clip_state, server_choice, p, keys) -> (prune_mask, param_prune_mask,
    clip_state, invariant_units, slack_units, train_keys)`, everything with a leading client
    axis C; `prune_mask` and `param_prune_mask` are None for `fedavg`. `scores` is each
    client's invariance scores {layer: f32[C, n]} (`make_scorer` against the model that client
    received before, DESIGN 2.4 and 2.9) for CLIP, and each client's Taylor importance for the
    `taylor` oracle; None for the other methods (`magnitude` scores w(t) here);
    `server_choice` is FLuID's server-side drop order, a `fluid.ServerChoice` (ignored by the
    other methods). `params` is w(t): the parameter masks take its shapes.
  """

  def masks(params, scores, clip_state, server_choice, p, keys):
    mask_keys, train_keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
    zeros = jnp.zeros(p.shape, jnp.int32)
    if not method.prunes:  # nothing is pruned: no masks to build or apply
      return None, None, clip_state, zeros, zeros, train_keys
    if method.prune_rule == "magnitude":  # the same scores for every client: w(t)'s
      scores = jax.tree.map(lambda a: jnp.broadcast_to(a, p.shape + a.shape),
                            importance.magnitude(unit_spec, params))
    elif method.prune_rule not in ("client_invariance", "taylor_oracle"):
      scores = None
    elif scores is None:
      raise ValueError(f"method {method.name!r} needs each client's unit scores")
    prune_mask, new_state, invariant, slack_count = jax.vmap(
        lambda sc, st, pk, kk: _client_masks(method, unit_spec, sc, server_choice, st, pk, kk,
                                             growth=growth, slack=slack,
                                             threshold_init=threshold_init,
                                             threshold_scale=threshold_scale),
        in_axes=(None if scores is None else 0, 0, 0, 0))(scores, clip_state, p, mask_keys)
    param_mask = jax.vmap(lambda m: units.param_prune_mask(unit_spec, m, params))(prune_mask)
    return prune_mask, param_mask, new_state, invariant, slack_count, train_keys

  return masks


def make_importance(unit_spec: units.UnitSpec, apply_fn, batch_fn,
                    examples: int = IMPORTANCE_EXAMPLES):
  """`importance(params, x, y, valid) -> {layer: f32[C, n]}`: each client's Taylor importance
  (`importance.taylor_importance`) at w(t) on `examples` of its examples spread evenly over its
  data (`importance.spread_examples`), vmapped over the client axis of `x, y, valid` (the
  `taylor` oracle's scores)."""

  def one(params, x, y, valid):
    idx, ok = importance.spread_examples(valid, examples)
    inputs, labels = batch_fn(x, y, idx)
    return importance.taylor_importance(unit_spec, apply_fn, params, inputs, labels, ok)

  return jax.vmap(one, in_axes=(None, 0, 0, 0))


def make_pruned_round(method: Method, unit_spec: units.UnitSpec, train, *,
                      growth: float = invariance.DEFAULT_GROWTH, slack: str = "lowest_score",
                      threshold_init: str = "band", importance_fn=None,
                      threshold_scale: float = 1.0):
  """Builds one round's masked training for all clients: jitted masks, then `train`.

  Args:
    method: the method's static choices.
    unit_spec: the model's prunable units.
    train: all clients' local training, from `clipjax.fl.training.make_trainer` (a host loop
      of jitted steps on CPU, one jitted scan elsewhere).
    growth, slack, threshold_init: CLIP's invariance settings (DESIGN 2.4;
      `invariance.SLACK_ORDERS`, `invariance.THRESHOLD_INITS`).
    importance_fn: `make_importance(...)`, needed by the `taylor` oracle only.
    threshold_scale: CLIP's invariance threshold multiplier (`invariance.update`).

  Returns:
    `pruned_round(params, scores, clip_state, server_choice, p, keys, x, y, valid) ->
    PrunedOutput`. `scores` as for `make_masks`, `p` is f32[C] keep fractions, `keys` typed
    keys [C]. Host code: it calls jitted pieces.
  """
  masks = jax.jit(make_masks(method, unit_spec, growth=growth, slack=slack,
                             threshold_init=threshold_init, threshold_scale=threshold_scale))
  count_params = jax.jit(jax.vmap(
      lambda m: sum(jnp.sum(a, dtype=jnp.int32) for a in jax.tree.leaves(m))))

  if method.prune_rule == "taylor_oracle":
    if importance_fn is None:
      raise ValueError("method 'taylor' needs importance_fn (methods.make_importance)")
    importance_fn = jax.jit(importance_fn)

  def pruned_round(params, scores, clip_state, server_choice, p, keys, x, y, valid):
    if method.prune_rule == "taylor_oracle":  # the oracle's extra backward pass, every client
      scores = importance_fn(params, x, y, valid)
    prune_mask, param_mask, new_state, invariant, slack_count, train_keys = masks(
        params, scores, clip_state, server_choice, p, keys)
    out = train(params, x, y, valid, train_keys, prune_mask, param_mask)
    num = p.shape[0]
    if prune_mask is None:
      kept = {layer.name: jnp.full((num,), layer.size, jnp.int32) for layer in unit_spec}
      size = sum(a.size for a in jax.tree.leaves(params))
      kept_params = jnp.full((num,), size, jnp.int32)
    else:
      kept = {k: jnp.sum(v, axis=-1).astype(jnp.int32) for k, v in prune_mask.items()}
      kept_params = count_params(param_mask)
    return PrunedOutput(
        delta=out.delta, param_prune_mask=param_mask, kept_units=kept, kept_params=kept_params,
        invariant_units=invariant, slack_units=slack_count, loss_sum=out.loss_sum,
        num_seen=out.num_seen, num_steps=out.num_steps, clip_state=new_state)

  return pruned_round
