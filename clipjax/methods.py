"""The six methods as one pure, jittable step: per-client unit masks, then masked training.

Every method runs the same full-shape, vmapped training; they differ only in which units
each client keeps (DESIGN 2.8):

* `fedavg`: everybody keeps everything (p = 1).
* `random`: Federated Dropout (Caldas et al. 2018), random units at the straggler's p.
* `ordered`: FjORD (Horvath et al., NeurIPS 2021), the first ceil(p n) units of each layer.
* `fluid`: FLuID (Wang et al., NeurIPS 2023), invariant units scored by the server from the
  non-stragglers' individual updates of the last round. Reads individual updates, so it
  cannot run under SecAgg: an insecure upper reference.
* `clip_compute` / `clip_network`: CLIP, invariant units scored by each client from the
  change of the global model between its last two copies, w(t) vs w(t-1) (DESIGN 2.4).

The keep fraction p per client comes from the straggler decision (DESIGN 2.2-2.3); the
baselines use CLIP's compute-aware p, as DESIGN 2.8 asks.

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv:2510.16694, 2025.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from clipjax.clip import invariance
from clipjax.models import units

PyTree = Any

PRUNING_METHODS = ("random", "ordered", "fluid", "clip_compute", "clip_network")
INVARIANCE_METHODS = ("fluid", "clip_compute", "clip_network")


@flax.struct.dataclass
class PrunedOutput:
  """One round of masked training for all clients (leading axis C everywhere)."""

  delta: PyTree                 # params-shaped, zero at pruned coordinates
  param_prune_mask: PyTree      # params-shaped 0/1 (only filled when asked for)
  prune_mask: dict              # {layer: f32[C, n]}
  kept_units: dict              # {layer: int32[C]}
  invariant_units: jax.Array    # int32[C], summed over layers
  slack_units: jax.Array        # int32[C]
  loss_sum: jax.Array
  num_seen: jax.Array
  num_steps: jax.Array
  clip_state: Any               # per-client invariance state, [C]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """Static choices of the masked round (hashable)."""

  method: str
  growth: float
  slack: str
  want_param_masks: bool = False


def init_clip_state(unit_spec: units.UnitSpec, num_clients: int):
  """Per-client invariance state, stacked over C clients."""
  sizes = {layer.name: layer.size for layer in unit_spec}
  return invariance.replicate_state(invariance.init_state(sizes), num_clients)


def _client_masks(spec: MethodSpec, unit_spec, scores, clip_state, p, key):
  """Unit masks of ONE client for its keep fraction p (traced)."""
  sizes = {layer.name: layer.size for layer in unit_spec}
  zero = jnp.zeros((), jnp.int32)
  if spec.method == "random":
    return invariance.random_prune_mask(sizes, p, key), clip_state, zero, zero
  if spec.method == "ordered":
    return invariance.ordered_prune_mask(sizes, p), clip_state, zero, zero
  prune_mask, new_state, counts = invariance.update(
      clip_state, scores, p, key, growth=spec.growth, slack=spec.slack)
  invariant = sum(jnp.asarray(v, jnp.int32) for v in counts.invariant.values())
  slack = sum(jnp.asarray(v, jnp.int32) for v in counts.slack.values())
  return prune_mask, new_state, invariant, slack


def make_masks(spec: MethodSpec, unit_spec: units.UnitSpec):
  """Builds the pure, jittable mask step of one round for all clients.

  Returns:
    `masks(params, score_reference, clip_state, p, keys) -> (prune_mask, param_prune_mask,
    clip_state, invariant_units, slack_units, train_keys)`, everything with a leading client
    axis C; `prune_mask` and `param_prune_mask` are None for `fedavg` (nothing is pruned).
    `score_reference` is what the invariance scores compare `params` with: w(t-1) for CLIP,
    w(t-1) + the non-stragglers' mean update for FLuID (ignored by the other methods).
  """

  def masks(params, score_reference, clip_state, p, keys):
    mask_keys, train_keys = jax.vmap(lambda k: tuple(jax.random.split(k)))(keys)
    zeros = jnp.zeros(p.shape, jnp.int32)
    if spec.method == "fedavg":  # nothing is pruned: no masks to build or apply
      return None, None, clip_state, zeros, zeros, train_keys
    if spec.method == "fluid":
      scores = units.unit_scores(unit_spec, score_reference, params)
    elif spec.method in INVARIANCE_METHODS:
      scores = units.unit_scores(unit_spec, params, score_reference)
    else:
      scores = None
    prune_mask, new_state, invariant, slack = jax.vmap(
        lambda st, pk, kk: _client_masks(spec, unit_spec, scores, st, pk, kk))(
            clip_state, p, mask_keys)
    param_mask = jax.vmap(lambda m: units.param_prune_mask(unit_spec, m, params))(prune_mask)
    return prune_mask, param_mask, new_state, invariant, slack, train_keys

  return masks


def make_pruned_round(spec: MethodSpec, unit_spec: units.UnitSpec, train: Callable):
  """Builds one round's masked training for all clients: jitted masks, then `train`.

  Args:
    spec: the method's static choices.
    unit_spec: the model's prunable units.
    train: all clients' local training, from `clipjax.fl.training.make_trainer` (a host loop
      of jitted steps on CPU, one jitted scan elsewhere).

  Returns:
    `pruned_round(params, score_reference, clip_state, p, keys, x, y, valid) -> PrunedOutput`.
    `p` is f32[C] keep fractions, `keys` typed keys [C]. Host code: it calls jitted pieces.
  """
  masks = jax.jit(make_masks(spec, unit_spec))

  def pruned_round(params, score_reference, clip_state, p, keys, x, y, valid):
    prune_mask, param_mask, new_state, invariant, slack, train_keys = masks(
        params, score_reference, clip_state, p, keys)
    out = train(params, x, y, valid, train_keys, prune_mask, param_mask)
    num = p.shape[0]
    if prune_mask is None:
      kept = {layer.name: jnp.full((num,), layer.size, jnp.int32) for layer in unit_spec}
      prune_mask = {layer.name: jnp.ones((num, layer.size), jnp.float32) for layer in unit_spec}
      if spec.want_param_masks:
        param_mask = jax.tree.map(jnp.ones_like, out.delta)
    else:
      kept = {k: jnp.sum(v, axis=-1).astype(jnp.int32) for k, v in prune_mask.items()}
    return PrunedOutput(
        delta=out.delta,
        param_prune_mask=param_mask if spec.want_param_masks else None,
        prune_mask=prune_mask, kept_units=kept, invariant_units=invariant,
        slack_units=slack, loss_sum=out.loss_sum, num_seen=out.num_seen,
        num_steps=out.num_steps, clip_state=new_state)

  return pruned_round
