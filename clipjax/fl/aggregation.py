"""Server aggregation as a small strategy: a rule (what is averaged) over a transport (how summed).

Rules (DESIGN 2.7), the registry `AGGREGATIONS`:

* `padded` (the paper's): the mean of zero-padded deltas weighted by examples. A coordinate a
  straggler pruned counts as a zero in its average.
* `participation_weighted` (FLuID's rule, beyond the paper under SecAgg): each coordinate is
  averaged over the clients that trained it. Under SecAgg the clients also securely sum their
  weighted 0/1 parameter masks, which doubles the upload.

Transports: `secure` runs `clipjax.secagg.secure_sum` on the flattened `[C, D]` vectors (host
code around jitted masking; it may raise `RoundAborted`); `plain` is the in-the-clear mean of
the stacked deltas, one jitted function. `fluid` (which reads individual updates) and
`fedavg` without SecAgg use `plain`.

`make_aggregator` returns `aggregate(deltas, weights, param_masks, setup) -> Aggregated`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from clipjax import secagg
from clipjax.fl import server as server_lib

PyTree = Any

AGGREGATIONS = ("padded", "participation_weighted")


class Aggregated(NamedTuple):
  """One round's aggregate.

  Attributes:
    mean_delta: params-shaped mean update.
    survivors: bool[C], clients whose update is in the mean.
    secagg: the `SecureSumResult` (None in the clear).
  """

  mean_delta: PyTree
  survivors: np.ndarray
  secagg: Any


@dataclasses.dataclass(frozen=True)
class SecureSettings:
  """What the secure transport needs besides the round's setup."""

  bits: int
  clip: float
  max_weight: float


def upload_vectors(rule: str, secure: bool) -> int:
  """Fixed-size vectors each client uploads: 2 for participation-weighted SecAgg, else 1."""
  return 2 if (secure and rule == "participation_weighted") else 1


def make_aggregator(rule: str, params: PyTree, secure: SecureSettings | None) -> Callable:
  """Builds the aggregation of one round.

  Args:
    rule: one of `AGGREGATIONS`.
    params: a params pytree (shapes only; fixes the flattening).
    secure: SecAgg settings, or None for the plain (in-the-clear) transport.

  Returns:
    `aggregate(deltas, weights, param_masks, setup) -> Aggregated`: deltas params-shaped with
    a leading client axis C, weights f32[C] (examples), param_masks the same shape as deltas
    (0/1; required by `participation_weighted`), setup the round's SecAgg setup (secure only).

  Raises:
    ValueError: for an unknown rule.
  """
  if rule not in AGGREGATIONS:
    raise ValueError(f"aggregation rule {rule!r} is unknown; choose one of {AGGREGATIONS}.")
  participation = rule == "participation_weighted"
  if secure is None:
    mean_fn = jax.jit(server_lib.participation_mean if participation else server_lib.weighted_mean)

    def plain(deltas, weights, param_masks=None, setup=None):
      del setup
      args = (deltas, jnp.asarray(weights, jnp.float32))
      if participation:
        if param_masks is None:
          raise ValueError("participation_weighted aggregation needs the parameter masks")
        args += (param_masks,)
      return Aggregated(mean_fn(*args), np.ones(len(weights), bool), None)

    return plain

  _, unravel = ravel_pytree(params)
  num_params = int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(params)))
  ravel_clients = jax.jit(jax.vmap(lambda t: ravel_pytree(t)[0]))

  def secure_fn(deltas, weights, param_masks=None, setup=None):
    flat = ravel_clients(deltas)
    if participation:
      if param_masks is None:
        raise ValueError("participation_weighted aggregation needs the parameter masks")
      flat = jnp.concatenate([flat, ravel_clients(param_masks)], axis=1)
    result = secagg.secure_sum(flat, np.asarray(weights), max_weight=secure.max_weight,
                               setup=setup, bits=secure.bits, clip=secure.clip,
                               keep_transcript_inputs=False)
    total = jnp.asarray(result.total)
    if participation:  # each coordinate over the (weighted) clients that trained it
      num, den = total[:num_params], total[num_params:]
      mean_flat = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    else:
      mean_flat = total / max(float(result.weight_total), 1e-12)
    mean = unravel(mean_flat.astype(jnp.float32))
    return Aggregated(mean, np.asarray(result.survivors, bool), result)

  return secure_fn
