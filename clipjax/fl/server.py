"""Server side of FedAvg: weighted aggregation and an optax server optimiser.

The server treats the negated aggregate delta as a pseudo-gradient, so FedAvg is
`optax.sgd(1.0)` and FedAdam/FedYogi are `optax.adam(...)`/`optax.yogi(...)`
(Reddi et al., "Adaptive Federated Optimization", ICLR 2021).

References:
  McMahan et al. Communication-Efficient Learning of Deep Networks from Decentralized
  Data. AISTATS 2017.
"""

from __future__ import annotations

from typing import Any

import chex
import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any

SERVER_OPTIMIZERS = ("sgd", "adam", "yogi")


@flax.struct.dataclass
class ServerState:
  """Global model and server-optimiser state.

  Attributes:
    params: the global model w(t).
    prev_params: w(t-1), buffered so clients can score invariance (equal to params
      before the first round).
    opt_state: server optimiser state.
    round: number of completed rounds.
  """

  params: PyTree
  prev_params: PyTree
  opt_state: PyTree
  round: jax.Array


def make_server_optimizer(name: str, lr: float, momentum: float = 0.0) -> optax.GradientTransformation:
  """Server optimiser by name: `sgd` (FedAvg when lr=1, momentum=0), `adam`, `yogi`."""
  if name == "sgd":
    return optax.sgd(lr, momentum=momentum or None)
  if name == "adam":
    return optax.adam(lr, b1=0.9, b2=0.99, eps=1e-3)
  if name == "yogi":
    return optax.yogi(lr, eps=1e-3)
  raise ValueError(f"Unknown server optimizer {name!r}; choose one of {SERVER_OPTIMIZERS}.")


def server_init(params: PyTree, optimizer: optax.GradientTransformation) -> ServerState:
  return ServerState(params=params, prev_params=params, opt_state=optimizer.init(params),
                     round=jnp.zeros((), jnp.int32))


def server_update(state: ServerState, mean_delta: PyTree,
                  optimizer: optax.GradientTransformation) -> ServerState:
  """Applies the aggregated client delta as the negative pseudo-gradient."""
  pseudo_grad = jax.tree.map(jnp.negative, mean_delta)
  updates, opt_state = optimizer.update(pseudo_grad, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return ServerState(params=params, prev_params=state.params, opt_state=opt_state,
                     round=state.round + 1)


def weighted_mean(deltas: PyTree, weights: jax.Array) -> PyTree:
  """FedAvg mean of stacked client deltas `[C, ...]` weighted by `weights [C]`.

  A round where every weight is zero returns zeros (no model change), never NaN.
  """
  chex.assert_rank(weights, 1)
  total = jnp.sum(weights)
  scale = weights / jnp.maximum(total, 1e-12)

  def mean(d):
    chex.assert_axis_dimension(d, 0, weights.shape[0])
    return jnp.tensordot(scale.astype(d.dtype), d, axes=1)

  return jax.tree.map(mean, deltas)


def participation_mean(deltas: PyTree, weights: jax.Array, param_prune_masks: PyTree) -> PyTree:
  """Per-coordinate mean over the clients that trained each coordinate (FLuID's rule).

  Coordinates no client trained keep a zero delta.
  """

  def mean(d, m):
    w = weights.astype(d.dtype)
    num = jnp.tensordot(w, d, axes=1)
    den = jnp.tensordot(w, m.astype(d.dtype), axes=1)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)

  return jax.tree.map(mean, deltas, param_prune_masks)
