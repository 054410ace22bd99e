"""Device-side pieces of a round: all clients' local training as one batched computation.

`train_clients` vmaps one client's `client_update` over the client axis C (the GPU/TPU loop
that `clipjax.fl.training` picks off CPU). `make_round` adds FedAvg aggregation and the server
optimiser, so a plain (non-secure, unpruned) round is one pure, jittable function: a
reference for tests. The round the experiments run, for every method, is
`clipjax.round.algorithm.make_round`.

Client keys are derived by purpose: `fold_in(fold_in(base, round), client_id)`.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from clipjax.fl import server as server_lib
from clipjax.fl.local import ClientOutput

PyTree = Any


@flax.struct.dataclass
class RoundMetrics:
  """Per-client sums of one round (leading axis C)."""

  loss_sum: jax.Array
  num_seen: jax.Array
  num_steps: jax.Array

  @property
  def train_loss(self) -> jax.Array:
    return jnp.sum(self.loss_sum) / jnp.maximum(jnp.sum(self.num_seen), 1.0)


def client_keys(base_key: jax.Array, round_index: jax.Array, client_ids: jax.Array) -> jax.Array:
  """Typed keys `[C]`: one per (round, client), replayable from the seed alone."""
  round_key = jax.random.fold_in(base_key, round_index)
  return jax.vmap(lambda c: jax.random.fold_in(round_key, c))(client_ids)


def train_clients(client_update: Callable, params: PyTree, x, y, valid, keys,
                  prune_mask=None, param_prune_mask=None, *,
                  client_batch: int | None = None) -> ClientOutput:
  """All clients' local training in one computation: the global `params` are broadcast.

  With `client_batch=None` every client is vmapped at once. Vmapping a convolution over
  per-client weights makes it a grouped convolution, which XLA:CPU runs far below its dense
  speed; `client_batch=k` instead maps over the clients k at a time (`lax.map` with
  `batch_size`, vmapped inside each chunk): the same fixed-shape, single-compile round.
  This is the device-side loop (GPU/TPU); `clipjax.fl.training` chooses per backend and
  `scripts/bench_train.py` measures the choices side by side.

  Args:
    client_update: from `make_client_update`.
    params: global parameters (shared by every client).
    x, y, valid: client data `[C, ...]`.
    keys: typed keys `[C]`.
    prune_mask: optional {layer: f32[C, n]} unit masks per client.
    param_prune_mask: optional params-shaped `[C, ...]` 0/1 masks per client.

    client_batch: clients per vmapped chunk (None: all at once).

  Returns:
    ClientOutput with a leading client axis.
  """
  if client_batch is None or client_batch >= x.shape[0]:
    in_axes = (None, 0, 0, 0, 0,
               None if prune_mask is None else 0,
               None if param_prune_mask is None else 0)
    return jax.vmap(client_update, in_axes=in_axes)(
        params, x, y, valid, keys, prune_mask, param_prune_mask)
  if client_batch < 1:
    raise ValueError(f"client_batch must be >= 1 or None, got {client_batch}.")

  def one(args):
    xc, yc, vc, kc, pm, ppm = args
    return client_update(params, xc, yc, vc, kc, pm, ppm)

  return jax.lax.map(one, (x, y, valid, keys, prune_mask, param_prune_mask),
                     batch_size=client_batch)


def make_round(client_update: Callable, server_optimizer: optax.GradientTransformation):
  """Builds a plain FedAvg round: vmapped local training, weighted mean, server step.

  Returns:
    `round_fn(state, x, y, valid, weights, keys) -> (state, RoundMetrics)`, pure; jit it
    once at the loop (shapes are fixed across rounds, so it compiles once).
  """

  def round_fn(state: server_lib.ServerState, x, y, valid, weights, keys):
    out = train_clients(client_update, state.params, x, y, valid, keys)
    mean_delta = server_lib.weighted_mean(out.delta, weights)
    new_state = server_lib.server_update(state, mean_delta, server_optimizer)
    return new_state, RoundMetrics(out.loss_sum, out.num_seen, out.num_steps)

  return round_fn
