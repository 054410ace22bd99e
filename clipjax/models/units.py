"""Model-agnostic description of prunable units and the pure functions that read it.

A *unit* is a conv output channel, a hidden dense neuron or an LSTM hidden unit. Each model
publishes a `UnitSpec`: for every prunable layer, the parameter axes indexed by that layer's
units. The pruning code (invariance scores, parameter masks, sub-network extraction) reads only
this spec, never the model's code.

Device-side functions (`ones_prune_mask`, `param_prune_mask`, `unit_scores`) are pure, jittable,
vmappable and safe under strict dtype promotion. `extract_subnetwork`, `scatter_subnetwork` and
`check_spec` are host-side NumPy helpers for tests and analysis.

References:
  CLIP: client-side invariant pruning for stragglers in secure federated learning,
  arXiv 2510.16694 (unit groups, invariance scores).
  Wang et al., "FLuID: Mitigating Stragglers in Federated Learning using Invariant Dropout",
  NeurIPS 2023 (relative-change invariance score).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Params = Any  # nested dict of arrays (the flax 'params' collection, unwrapped)
PruneMask = Mapping[str, jax.Array]  # layer name -> float32 [n_units] of 0/1

ROLES = ("incoming", "bias", "outgoing")


@dataclasses.dataclass(frozen=True)
class ParamSlice:
  """One parameter axis indexed by a layer's units.

  Attributes:
    path: Path into the params dict, e.g. ("conv0", "kernel").
    axis: Axis of that array indexed by the layer's units (negative allowed).
    role: "incoming" | "bias" | "outgoing".
    tile: The axis has length tile * n_units and index i belongs to unit i % n_units (a conv
      channel feeding a dense layer through an NHWC flatten: tile = h * w).
  """

  path: tuple[str, ...]
  axis: int
  role: str
  tile: int = 1


@dataclasses.dataclass(frozen=True)
class UnitLayer:
  """A prunable layer: its name (the key in prune masks), unit count and parameter slices."""

  name: str
  size: int
  slices: tuple[ParamSlice, ...]


UnitSpec = tuple[UnitLayer, ...]


def _path_of(key_path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def _slices_by_path(spec: UnitSpec) -> dict[tuple[str, ...], list[tuple[UnitLayer, ParamSlice]]]:
  by_path = collections.defaultdict(list)
  for layer in spec:
    for s in layer.slices:
      by_path[tuple(s.path)].append((layer, s))
  return by_path


def _get(params: Params, path: tuple[str, ...]):
  node = params
  for key in path:
    node = node[key]
  return node


def ones_prune_mask(spec: UnitSpec) -> dict[str, jax.Array]:
  """The prune mask that keeps every unit (the dense model)."""
  return {layer.name: jnp.ones((layer.size,), jnp.float32) for layer in spec}


def param_prune_mask(spec: UnitSpec, prune_mask: PruneMask, params: Params) -> Params:
  """Expands unit masks to a params-shaped pytree of float32 0/1.

  Each parameter's mask is the product of the unit masks of every slice touching it (a kernel
  gets the outer product of its incoming and outgoing layers' unit masks); parameters no slice
  touches get ones.

  Args:
    spec: The model's unit spec.
    prune_mask: Layer name -> float32 [n_units] 0/1.
    params: Params pytree (only shapes are read).

  Returns:
    A pytree with the structure and shapes of `params`, dtype float32.
  """
  by_path = _slices_by_path(spec)

  def leaf_mask(key_path, leaf):
    out = jnp.ones(jnp.shape(leaf), jnp.float32)
    for layer, s in by_path.get(_path_of(key_path), ()):
      units = jnp.asarray(prune_mask[layer.name], jnp.float32)
      units = jnp.tile(units, s.tile)
      axis = s.axis % out.ndim
      shape = [1] * out.ndim
      shape[axis] = units.shape[0]
      out = out * units.reshape(shape)
    return out

  return jax.tree_util.tree_map_with_path(leaf_mask, params)


SCORES = ("relative_l2", "max_relative")


def unit_scores(spec: UnitSpec, w_now: Params, w_prev: Params, eps: float = 1e-8,
                kind: str = "relative_l2") -> dict[str, jax.Array]:
  """Per-unit invariance score: the relative change of the unit's parameter group.

  `relative_l2` (DESIGN 2.4 as amended, the default):
    s_j = ||w_now - w_prev||_group / (||w_prev||_group + eps).
  `max_relative` (the first DESIGN 2.4, the default before issue 24):
    s_j = max_{w in group(j)} |w_now - w_prev| / (|w_prev| + eps).
  The max of per-weight ratios is set by the group's weight nearest zero; on FEMNIST it ranks
  units almost independently from one round to the next (Spearman rho ~0 to 0.6 per layer,
  against 0.9-1.0 for `relative_l2`; `scripts/invariance_report.py`, docs/design.md 2.4).

  Args:
    spec: The model's unit spec.
    w_now: Global params of this round, w(t).
    w_prev: Global params of the previous round, w(t-1).
    eps: Added to the denominator to avoid division by zero.
    kind: One of `SCORES`.

  Returns:
    Layer name -> float32 [n_units] scores.

  Raises:
    ValueError: for an unknown kind.
  """
  if kind not in SCORES:
    raise ValueError(f"score kind {kind!r} is unknown; choose one of {SCORES}")
  scores = {}
  for layer in spec:
    per_slice, change_sq, size_sq = [], 0.0, 0.0
    for s in layer.slices:
      now = jnp.asarray(_get(w_now, s.path), jnp.float32)
      prev = jnp.asarray(_get(w_prev, s.path), jnp.float32)
      by_unit = lambda a, s=s: jnp.moveaxis(a, s.axis, 0).reshape(s.tile, layer.size, -1)  # noqa: E731
      if kind == "relative_l2":
        change_sq = change_sq + jnp.sum(by_unit(now - prev) ** 2, axis=(0, 2))
        size_sq = size_sq + jnp.sum(by_unit(prev) ** 2, axis=(0, 2))
        continue
      rel = jnp.abs(now - prev) / (jnp.abs(prev) + eps)
      per_slice.append(by_unit(rel).max(axis=(0, 2)))
    if kind == "relative_l2":
      scores[layer.name] = jnp.sqrt(change_sq) / (jnp.sqrt(size_sq) + eps)
    else:
      scores[layer.name] = jnp.stack(per_slice).max(axis=0)
  return scores


def _kept_indices(keep: Mapping[str, np.ndarray], layer: UnitLayer, s: ParamSlice) -> np.ndarray:
  layer_keep = np.asarray(keep[layer.name], bool)
  if layer_keep.shape != (layer.size,):
    raise ValueError(f"keep[{layer.name!r}] has shape {layer_keep.shape}, expected ({layer.size},)")
  return np.nonzero(np.tile(layer_keep, s.tile))[0]


def extract_subnetwork(spec: UnitSpec, params: Params, keep: Mapping[str, np.ndarray]) -> Params:
  """Host-side: the params of the dense sub-network made of the kept units.

  Args:
    spec: The model's unit spec.
    params: Full-shape params.
    keep: Layer name -> bool [n_units], True for kept units.

  Returns:
    Params (NumPy arrays) of the model built with widths {name: keep[name].sum()}.
  """
  by_path = _slices_by_path(spec)

  def take(key_path, leaf):
    out = np.asarray(leaf)
    for layer, s in by_path.get(_path_of(key_path), ()):
      out = np.take(out, _kept_indices(keep, layer, s), axis=s.axis)
    return out

  return jax.tree_util.tree_map_with_path(take, params)


def scatter_subnetwork(spec: UnitSpec, sub_params: Params, keep: Mapping[str, np.ndarray],
                       like: Params) -> Params:
  """Host-side inverse of `extract_subnetwork`: zeros at pruned coordinates.

  Args:
    spec: The model's unit spec.
    sub_params: Params of the dense sub-network.
    keep: Layer name -> bool [n_units], the same used to extract.
    like: Full-shape params giving the output shapes and dtypes (values are not read).

  Returns:
    Full-shape params (NumPy arrays).
  """
  by_path = _slices_by_path(spec)
  sub_leaves = dict(
      (_path_of(kp), leaf) for kp, leaf in jax.tree_util.tree_flatten_with_path(sub_params)[0])

  def place(key_path, full_leaf):
    path = _path_of(key_path)
    full = np.zeros(np.shape(full_leaf), np.asarray(full_leaf).dtype)
    index = [np.arange(n) for n in full.shape]
    for layer, s in by_path.get(path, ()):
      index[s.axis % full.ndim] = _kept_indices(keep, layer, s)
    full[np.ix_(*index)] = np.asarray(sub_leaves[path])
    return full

  return jax.tree_util.tree_map_with_path(place, like)


def check_spec(spec: UnitSpec, params: Params) -> None:
  """Validates a unit spec against params.

  Raises:
    ValueError: on a duplicate layer name, a bad role or tile, a path missing from params, an
      axis out of range, an axis whose length is not tile * size, or two slices on one axis.
  """
  names = [layer.name for layer in spec]
  if len(set(names)) != len(names):
    raise ValueError(f"duplicate unit layer names in spec: {names}")
  seen = {}
  for layer in spec:
    if layer.size < 1:
      raise ValueError(f"unit layer {layer.name!r} has size {layer.size}, must be >= 1")
    for s in layer.slices:
      where = f"layer {layer.name!r} slice {s}"
      if s.role not in ROLES:
        raise ValueError(f"{where}: role {s.role!r} not in {ROLES}")
      if s.tile < 1:
        raise ValueError(f"{where}: tile must be >= 1")
      try:
        leaf = _get(params, tuple(s.path))
      except (KeyError, TypeError, IndexError):
        raise ValueError(f"{where}: path {s.path} not found in params") from None
      shape = np.shape(leaf)
      if isinstance(leaf, Mapping) or not shape:
        raise ValueError(f"{where}: path {s.path} is not an array leaf with an axis")
      if not -len(shape) <= s.axis < len(shape):
        raise ValueError(f"{where}: axis {s.axis} out of range for shape {shape}")
      if shape[s.axis] != s.tile * layer.size:
        raise ValueError(f"{where}: axis length {shape[s.axis]} != tile {s.tile} * size "
                         f"{layer.size} (shape {shape})")
      key = (tuple(s.path), s.axis % len(shape))
      if key in seen:
        raise ValueError(f"{where}: axis already claimed by layer {seen[key]!r}")
      seen[key] = layer.name
