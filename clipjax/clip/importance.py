"""How much each prunable unit matters, measured, and the criteria that guess it (issue 25).

CLIP bets that the units whose weights changed least between w(t-1) and w(t) are the safest to
prune (DESIGN 2.4). This module measures what "safe" means on a client's own data, so the bet
can be tested against other guesses:

* `removal_importance`: the exact loss increase on a fixed batch when ONE unit is removed, i.e.
  its unit mask set to 0 in the forward pass, as a pruned client trains it
  (`ModelDef.apply(params, x, prune_mask)`). One forward pass per unit.
* `taylor_importance`: the first-order estimate |sum over the unit's parameter group of
  w * dL/dw| (Molchanov et al. 2019), one backward pass. For a ReLU unit (conv channel, dense
  neuron) the sum over its incoming weights and bias is the derivative of the loss with respect
  to the unit's output scale, and so is the sum over its outgoing weights: the group sum is
  twice the first-order change of removing it. A real client would need this extra backward
  pass on its data before training, so as a pruning rule it is an *oracle* (`taylor` method).
* `magnitude`: ||w|| of the unit's group (the classic magnitude criterion; w(t) only).

Every function is pure and jittable over the unit spec that the masks already use
(`clipjax.models.units`); scores are {layer: f32[n_l]}, larger = more important (the criteria's
scores, oriented the same way, are compared to the measurement with `spearman`).

References:
  Molchanov, Mallya, Tyree, Frosio, Kautz. Importance Estimation for Neural Network Pruning.
  CVPR 2019 (group Taylor importance).
  Li, Kadav, Durdanovic, Samet, Graf. Pruning Filters for Efficient ConvNets. ICLR 2017
  (filter magnitude).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from clipjax.fl.local import masked_cross_entropy
from clipjax.models import units

Params = Any
# apply(params, inputs, prune_mask or None) -> logits, as `ModelDef.apply`.
ApplyFn = Callable[[Params, jax.Array, Any], jax.Array]


def batch_loss(apply_fn: ApplyFn, params: Params, inputs: jax.Array, labels: jax.Array,
               ok: jax.Array, prune_mask: Mapping[str, jax.Array] | None = None) -> jax.Array:
  """Mean cross-entropy over the valid examples (`ok`) of one batch, f32[]."""
  total, count = masked_cross_entropy(apply_fn(params, inputs, prune_mask), labels, ok)
  return total / jnp.maximum(count, 1.0)


def spread_examples(valid: jax.Array, examples: int) -> tuple[jax.Array, jax.Array]:
  """(idx int32[E], ok bool[E]): E = `examples` slots spread evenly over a client's valid slots
  (all of them, once each, when it has fewer; the rest marked not ok).

  Evenly spread, not the first E: a client's examples may be stored grouped by class (a LEAF
  writer's digits, then letters), and a batch of one group measures importance on that group.
  """
  valid = jnp.asarray(valid, bool)
  order = jnp.argsort(jnp.logical_not(valid), stable=True)  # valid slots first, in order
  n = jnp.sum(valid.astype(jnp.int32))
  i = jnp.arange(examples, dtype=jnp.int32)
  pos = jnp.where(n >= examples, (i * n) // examples, jnp.minimum(i, jnp.maximum(n - 1, 0)))
  return order[pos].astype(jnp.int32), i < n


def _by_unit(spec_layer: units.UnitLayer, s: units.ParamSlice, a: jax.Array) -> jax.Array:
  """[tile, n, rest]: the slice's axis split into its units (index i is unit i % n)."""
  return jnp.moveaxis(jnp.asarray(a, jnp.float32), s.axis, 0).reshape(s.tile, spec_layer.size, -1)


def _group_sum(spec: units.UnitSpec, tree: Params, *, square: bool) -> dict[str, jax.Array]:
  """Per unit, the sum over its group (every slice) of the params-shaped `tree` (squared)."""
  out = {}
  for layer in spec:
    total = jnp.zeros((layer.size,), jnp.float32)
    for s in layer.slices:
      part = _by_unit(layer, s, units._get(tree, s.path))  # noqa: SLF001 (same package)
      total = total + jnp.sum(part ** 2 if square else part, axis=(0, 2))
    out[layer.name] = total
  return out


def magnitude(spec: units.UnitSpec, params: Params) -> dict[str, jax.Array]:
  """||w||_2 of each unit's parameter group: {layer: f32[n]}."""
  return {k: jnp.sqrt(v) for k, v in _group_sum(spec, params, square=True).items()}


def taylor_importance(spec: units.UnitSpec, apply_fn: ApplyFn, params: Params,
                      inputs: jax.Array, labels: jax.Array, ok: jax.Array, *,
                      signed: bool = False) -> dict[str, jax.Array]:
  """|sum over each unit's group of w * dL/dw| at `params` on one batch: {layer: f32[n]}.

  `signed=True`: -sum / 2 instead, for a ReLU unit the first-order estimate of the loss change
  of removing it (`removal_importance`'s first-order term), negative where removing it lowers
  the loss. The absolute value (the default, Molchanov et al.'s) ranks by how much the loss
  moves either way.
  """
  grads = jax.grad(lambda p: batch_loss(apply_fn, p, inputs, labels, ok))(params)
  products = jax.tree.map(lambda w, g: jnp.asarray(w, jnp.float32) * g, params, grads)
  sums = _group_sum(spec, products, square=False)
  return {k: (-0.5 * v if signed else jnp.abs(v)) for k, v in sums.items()}


def removal_importance(spec: units.UnitSpec, apply_fn: ApplyFn, params: Params,
                       inputs: jax.Array, labels: jax.Array, ok: jax.Array, *,
                       units_at_once: int = 16) -> dict[str, jax.Array]:
  """Loss with unit j removed minus the full model's loss, for every unit: {layer: f32[n]}.

  Removing a unit sets its unit mask to 0 (every other unit of every layer kept), as a pruned
  client's forward pass does. `units_at_once` forward passes run batched (`lax.map`), which
  bounds memory on large layers.
  """
  ones = units.ones_prune_mask(spec)
  base = batch_loss(apply_fn, params, inputs, labels, ok, ones)
  out = {}
  for layer in spec:
    def without(j, name=layer.name, n=layer.size):
      mask = dict(ones)
      mask[name] = 1.0 - jax.nn.one_hot(j, n, dtype=jnp.float32)
      return batch_loss(apply_fn, params, inputs, labels, ok, mask)
    losses = jax.lax.map(without, jnp.arange(layer.size), batch_size=min(units_at_once, layer.size))
    out[layer.name] = losses - base
  return out


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
  """Spearman rank correlation of two f32[n] vectors (average ranks for ties), f32[]; nan when
  either is constant."""
  def ranks(x):
    x = jnp.asarray(x, jnp.float32)
    order = jnp.argsort(x)
    sorted_x = x[order]
    # average rank of each run of equal values: (first index + last index) / 2 of the run
    first = jnp.searchsorted(sorted_x, sorted_x, side="left")
    last = jnp.searchsorted(sorted_x, sorted_x, side="right") - 1
    r = jnp.zeros_like(x).at[order].set((first + last).astype(jnp.float32) / 2.0)
    return r
  ra, rb = ranks(a), ranks(b)
  ra, rb = ra - ra.mean(), rb - rb.mean()
  return jnp.sum(ra * rb) / jnp.sqrt(jnp.sum(ra ** 2) * jnp.sum(rb ** 2))


# The criteria of issue 25's study, as scores oriented like importance (larger = keep):
# CLIP's invariance (both scores: a unit that changed more is kept), the group norm, the
# Taylor oracle (|first-order change|, and its signed first-order estimate of the removal's
# loss change), FjORD's order (the first units are kept) and random units.
CRITERIA = ("invariance relative_l2", "invariance max_relative", "magnitude", "taylor (oracle)",
            "taylor signed (oracle)", "ordered", "random")


def criteria_scores(spec: units.UnitSpec, apply_fn: ApplyFn, w_now: Params, w_prev: Params,
                    inputs: jax.Array, labels: jax.Array, ok: jax.Array,
                    key: jax.Array) -> dict[str, dict[str, jax.Array]]:
  """Every `CRITERIA` score of each unit of w(t) = `w_now`, for a client holding the batch:
  {criterion: {layer: f32[n]}}, larger = the criterion keeps it first."""
  out = {f"invariance {kind}": units.unit_scores(spec, w_now, w_prev, kind=kind)
         for kind in units.SCORES}
  out["magnitude"] = magnitude(spec, w_now)
  out["taylor (oracle)"] = taylor_importance(spec, apply_fn, w_now, inputs, labels, ok)
  out["taylor signed (oracle)"] = taylor_importance(spec, apply_fn, w_now, inputs, labels, ok,
                                                    signed=True)
  out["ordered"] = {layer.name: -jnp.arange(layer.size, dtype=jnp.float32) for layer in spec}
  out["random"] = {layer.name: jax.random.uniform(jax.random.fold_in(key, i), (layer.size,))
                   for i, layer in enumerate(spec)}
  return {c: out[c] for c in CRITERIA}


def agreement(spec: units.UnitSpec, apply_fn: ApplyFn, w_now: Params, w_prev: Params,
              inputs: jax.Array, labels: jax.Array, ok: jax.Array, key: jax.Array,
              units_at_once: int = 16) -> dict[str, dict[str, jax.Array]]:
  """Spearman rank agreement of each criterion's score with the measured removal importance on
  the batch: {criterion: {layer: f32[]}} (1: the criterion keeps units in the order of what
  their removal costs; 0: no better than random). Jit it with `spec`, `apply_fn` static."""
  measured = removal_importance(spec, apply_fn, w_now, inputs, labels, ok,
                                units_at_once=units_at_once)
  scores = criteria_scores(spec, apply_fn, w_now, w_prev, inputs, labels, ok, key)
  return {c: {k: spearman(s[k], measured[k]) for k in measured} for c, s in scores.items()}
