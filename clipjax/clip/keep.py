"""Keep fractions: how much of the model a straggler trains (DESIGN 2.3).

A straggler first picks a kept-FLOP fraction rho:

* `clip_compute`: rho_k = F* / fit_k, so the pruned fit time meets the (1 - f) quantile of the
  known full-model fit times;
* `clip_network`: rho_k = (T* - net_k) / fit_k. The SecAgg upload cannot shrink, so a network
  straggler over-prunes to finish computing early and overlap its slow upload.

rho is clipped to [rho_min, 1]; non-stragglers keep rho = 1. The neuron keep fraction p_k (the
same for every prunable layer) is then the largest p on a grid whose FLOP fraction is <= rho_k.
Interior layers lose FLOPs on both their input and their output side (~p^2), so p = rho would
prune far too much: the solver calls the model's real FLOP function. The grid is either regular
(`resolution`) or exact: every p = k / n_l at which some layer's kept count ceil(p n_l) changes.

The table is built on the host (`make_flop_table`, Python callable); the lookup
(`keep_fraction_from_table`) and `keep_fraction` are jnp and vmap over clients.

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv 2510.16694 (2025), Secs. 4.2-4.3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.clip.stragglers import StragglerDecision

FlopFraction = Callable[[float], float]
METHODS = ("clip_compute", "clip_network")
DEFAULT_P_MIN = 0.5
DEFAULT_RESOLUTION = 1e-3
# Table FLOP fractions within this relative distance of rho still count as affordable, so
# rho = flop_fraction(p) returns p despite float32 rounding.
_RHO_RTOL = 1e-6


@flax.struct.dataclass
class FlopTable:
  """Candidate keep fractions `p` [G] (ascending, last = 1) and their FLOP fractions `rho` [G]."""

  p: jax.Array
  rho: jax.Array


def _check_unit_interval(name: str, value) -> None:
  if isinstance(value, jax.Array):
    return  # may be traced; concrete Python/NumPy values are checked
  if not 0.0 < float(value) <= 1.0:
    raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def candidate_keep_fractions(
    p_min: float = DEFAULT_P_MIN,
    resolution: float | None = DEFAULT_RESOLUTION,
    layer_sizes: Mapping[str, int] | None = None,
) -> np.ndarray:
  """The p grid: regular steps from p_min to 1, or exact unit-count breakpoints.

  Args:
    p_min: smallest keep fraction, in (0, 1].
    resolution: step of the regular grid in (0, 1]; ignored when `layer_sizes` is given.
    layer_sizes: {layer: n_l}; if given, the grid is {k / n_l : k / n_l >= p_min} plus p_min.

  Returns:
    float64 ascending unique array containing p_min and 1.

  Raises:
    ValueError: for p_min or resolution outside (0, 1], or non-positive layer sizes.
  """
  _check_unit_interval("p_min", p_min)
  if layer_sizes is not None:
    if not layer_sizes or any(int(n) != n or n < 1 for n in layer_sizes.values()):
      raise ValueError(f"layer_sizes must be positive ints, got {dict(layer_sizes)!r}")
    points = [np.arange(1, n + 1) / n for n in layer_sizes.values()]
    grid = np.concatenate([np.array([p_min, 1.0])] + points)
  else:
    if resolution is None:
      raise ValueError("give resolution or layer_sizes")
    _check_unit_interval("resolution", resolution)
    steps = max(int(np.ceil((1.0 - p_min) / resolution - 1e-9)), 1)
    grid = np.linspace(p_min, 1.0, steps + 1)
  return np.unique(grid[grid >= p_min])


def make_flop_table(
    flop_fraction: FlopFraction,
    *,
    p_min: float = DEFAULT_P_MIN,
    resolution: float | None = DEFAULT_RESOLUTION,
    layer_sizes: Mapping[str, int] | None = None,
) -> FlopTable:
  """Evaluates `flop_fraction` on the p grid (host side).

  Args:
    flop_fraction: p -> FLOPs of the model with every prunable layer at keep fraction p,
      divided by the full model's FLOPs (must be 1 at p = 1).
    p_min: smallest keep fraction.
    resolution: regular grid step (see `candidate_keep_fractions`).
    layer_sizes: exact unit-count grid instead of a regular one.

  Returns:
    A `FlopTable` of float32 arrays.

  Raises:
    ValueError: for bad grid arguments, or a flop_fraction that is not finite, not in [0, 1]
      or not 1 at p = 1.
  """
  p = candidate_keep_fractions(p_min, resolution, layer_sizes)
  rho = np.array([float(flop_fraction(float(x))) for x in p])
  if not np.all(np.isfinite(rho)) or np.any(rho < 0) or np.any(rho > 1 + 1e-6):
    raise ValueError(f"flop_fraction must map [p_min, 1] into [0, 1], got range "
                     f"[{rho.min()!r}, {rho.max()!r}]")
  if abs(rho[-1] - 1.0) > 1e-6:
    raise ValueError(f"flop_fraction(1.0) must be 1, got {rho[-1]!r}")
  return FlopTable(p=jnp.asarray(p, jnp.float32), rho=jnp.asarray(rho, jnp.float32))


def default_rho_min(flop_fraction: FlopFraction, p_min: float = DEFAULT_P_MIN) -> float:
  """rho_min = flop_fraction(p_min): the clip that keeps p >= p_min (0.5 by default)."""
  _check_unit_interval("p_min", p_min)
  rho_min = float(flop_fraction(float(p_min)))
  _check_unit_interval("rho_min", rho_min)
  return rho_min


def keep_fraction_from_table(rho, table: FlopTable) -> jax.Array:
  """Largest table p with FLOP fraction <= rho (the smallest p if none); jnp, any shape of rho.

  Monotone non-decreasing in rho whatever the table, because a larger rho only adds
  affordable candidates.
  """
  rho = jnp.asarray(rho, jnp.float32)
  affordable = table.rho <= rho[..., None] * (1.0 + _RHO_RTOL)
  return jnp.max(jnp.where(affordable, table.p, table.p[0]), axis=-1)


def keep_fraction_for_rho(
    rho,
    flop_fraction: FlopFraction,
    p_min: float = DEFAULT_P_MIN,
    resolution: float | None = DEFAULT_RESOLUTION,
    *,
    layer_sizes: Mapping[str, int] | None = None,
) -> np.ndarray:
  """Host convenience: `keep_fraction_from_table(rho, make_flop_table(...))` as NumPy."""
  table = make_flop_table(flop_fraction, p_min=p_min, resolution=resolution,
                          layer_sizes=layer_sizes)
  return np.asarray(keep_fraction_from_table(rho, table))


def target_rho(
    decision: StragglerDecision,
    own_fit,
    own_net,
    *,
    method: str,
    rho_min,
) -> jax.Array:
  """Kept-FLOP fraction of one client: 1 for non-stragglers, else clip(rho_method, rho_min, 1).

  Args:
    decision: this client's `StragglerDecision`.
    own_fit: its full-model fit time (seconds, > 0).
    own_net: its network time (seconds).
    method: "clip_compute" (rho = F*/fit) or "clip_network" (rho = (T* - net)/fit).
    rho_min: lower clip in (0, 1] (a float, or an f32[] array such as `table.rho[0]`).

  Raises:
    ValueError: for an unknown method or a concrete rho_min outside (0, 1].
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  _check_unit_interval("rho_min", rho_min)
  own_fit = jnp.asarray(own_fit, jnp.float32)
  own_net = jnp.asarray(own_net, jnp.float32)
  budget = decision.f_star if method == "clip_compute" else decision.t_star - own_net
  rho = budget / jnp.maximum(own_fit, jnp.finfo(jnp.float32).tiny)
  rho = jnp.clip(jnp.nan_to_num(rho, nan=1.0), rho_min, 1.0)
  return jnp.where(decision.is_straggler, rho, 1.0)


def rho_floor(rho_min, table: FlopTable):
  """The smallest kept-FLOP fraction a straggler may train: `rho_min`, or by default the
  table's FLOP fraction at its smallest p."""
  return table.rho[0] if rho_min is None else rho_min


def keep_fraction(
    decision: StragglerDecision,
    own_fit,
    own_net,
    *,
    method: str,
    table: FlopTable,
    rho_min: float | None = None,
) -> jax.Array:
  """Neuron keep fraction p of one client (1 for non-stragglers); jnp, vmap over clients.

  Args:
    decision: this client's `StragglerDecision`.
    own_fit: its full-model fit time, seconds.
    own_net: its network time, seconds.
    method: "clip_compute" or "clip_network".
    table: `make_flop_table(...)` of the model.
    rho_min: lower clip of rho; default: the table's FLOP fraction at its smallest p, so p never
      goes below the table's p_min (0.5 by default).

  Returns:
    f32[] keep fraction in [p_min, 1].
  """
  rho_min = rho_floor(rho_min, table)
  rho = target_rho(decision, own_fit, own_net, method=method, rho_min=rho_min)
  return jnp.where(decision.is_straggler, keep_fraction_from_table(rho, table), 1.0)
