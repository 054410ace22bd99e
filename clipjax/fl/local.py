"""Local training of ONE client: one step, and a `lax.scan` over its padded steps.

Every client of a round has the same padded shapes: its examples live in slots
`[0, num_examples)` of an `N` slot axis (`valid` is a prefix) and it runs
`epochs * ceil(N / B)` steps. A step whose batch holds no valid example is a no-op
(`jnp.where(active, new, old)` on parameters and optimiser state), so a client with few
examples simply idles through the padded tail. Losses are returned as sums and counts.

Axis letters: N example slots, B batch, S steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any
# apply_fn(params, inputs, prune_mask) -> logits [B, K]; prune_mask: {layer: f32[n]} or None.
ApplyFn = Callable[[PyTree, jax.Array, Any], jax.Array]
# batch_fn(x_client, y_client, idx[B]) -> (inputs, labels int32 [B]).
BatchFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@flax.struct.dataclass
class ClientOutput:
  """What one client's local training returns (all fixed-shape).

  Attributes:
    delta: params-shaped pytree, trained minus received parameters.
    loss_sum: sum of the per-example training losses over every valid example seen.
    num_seen: number of valid example visits (examples x epochs).
    num_steps: number of non-padded optimiser steps taken.
  """

  delta: PyTree
  loss_sum: jax.Array
  num_seen: jax.Array
  num_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class LocalSpec:
  """Static description of local training (hashable, safe as a jit static)."""

  epochs: int
  batch_size: int

  def __post_init__(self):
    if self.epochs < 1:
      raise ValueError(f"local_epochs must be >= 1, got {self.epochs}.")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")

  def steps_per_epoch(self, num_slots: int) -> int:
    return -(-num_slots // self.batch_size)

  def num_steps(self, num_slots: int) -> int:
    return self.epochs * self.steps_per_epoch(num_slots)


def batch_indices(key: jax.Array, valid: jax.Array, spec: LocalSpec) -> tuple[jax.Array, jax.Array]:
  """Shuffled batch indices for all epochs of one client.

  Valid slots come first in a fresh random order each epoch; padding slots and the
  ragged tail are marked invalid.

  Args:
    key: typed PRNG key of this client and round.
    valid: bool [N].
    spec: local training spec.

  Returns:
    idx int32 [S, B] slot indices and batch_valid bool [S, B].
  """
  chex.assert_rank(valid, 1)
  n = valid.shape[0]
  per_epoch = spec.steps_per_epoch(n)
  padded = per_epoch * spec.batch_size

  def one_epoch(k):
    # Invalid slots get key 2 > any uniform, so they sort behind every valid slot.
    order = jnp.argsort(jnp.where(valid, jax.random.uniform(k, (n,)), 2.0))
    order = jnp.pad(order, (0, padded - n))
    ok = jnp.pad(valid[order[:n]], (0, padded - n))
    return order.reshape(per_epoch, spec.batch_size), ok.reshape(per_epoch, spec.batch_size)

  idx, ok = jax.vmap(one_epoch)(jax.random.split(key, spec.epochs))
  return (idx.reshape(-1, spec.batch_size).astype(jnp.int32),
          ok.reshape(-1, spec.batch_size))


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, weight: jax.Array):
  """Sum of cross-entropy over examples with `weight` 1, and that count."""
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  w = weight.astype(losses.dtype)
  return jnp.sum(losses * w), jnp.sum(w)


@flax.struct.dataclass
class ClientCarry:
  """State of ONE client between local steps (fixed-shape, so a loop can carry it)."""

  params: PyTree
  opt_state: PyTree
  loss_sum: jax.Array
  num_seen: jax.Array
  num_steps: jax.Array


def make_client_step(apply_fn: ApplyFn, batch_fn: BatchFn,
                     optimizer: optax.GradientTransformation):
  """Builds the three pieces of ONE client's local training, for any loop to drive.

  The same pieces make the device-side `lax.scan` of `make_client_update` and the host loop
  of `clipjax.fl.training` (DESIGN 2.5: on XLA:CPU a convolution inside a while loop runs far
  below its speed outside one), so both loops compute the same function.

  Args:
    apply_fn: model forward, `apply_fn(params, inputs, prune_mask) -> logits`.
    batch_fn: example gathering, `batch_fn(x, y, idx) -> (inputs, labels)`.
    optimizer: client optimiser (optax); its state starts fresh every round.

  Returns:
    `(init, step, finish)`:
    `init(params) -> ClientCarry`;
    `step(carry, x, y, idx[B], ok[B], prune_mask) -> ClientCarry`, a no-op when no example
    of the batch is valid (`jnp.where(active, new, old)`);
    `finish(carry, params, param_prune_mask) -> ClientOutput`.
  """

  def init(params) -> ClientCarry:
    zero = jnp.zeros((), jnp.float32)
    return ClientCarry(params, optimizer.init(params), zero, zero, jnp.zeros((), jnp.int32))

  def loss_fn(p, inputs, labels, ok, prune_mask):
    logits = apply_fn(p, inputs, prune_mask)
    total, count = masked_cross_entropy(logits, labels, ok)
    return total / jnp.maximum(count, 1.0), (total, count)

  grad_fn = jax.grad(loss_fn, has_aux=True)

  def step(carry: ClientCarry, x, y, b_idx, ok, prune_mask=None) -> ClientCarry:
    p, opt_state = carry.params, carry.opt_state
    inputs, labels = batch_fn(x, y, b_idx)
    grads, (total, count) = grad_fn(p, inputs, labels, ok, prune_mask)
    updates, new_opt_state = optimizer.update(grads, opt_state, p)
    new_p = optax.apply_updates(p, updates)
    active = jnp.any(ok)
    keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
    return ClientCarry(jax.tree.map(keep, new_p, p), jax.tree.map(keep, new_opt_state, opt_state),
                       carry.loss_sum + total, carry.num_seen + count,
                       carry.num_steps + active.astype(jnp.int32))

  def finish(carry: ClientCarry, params, param_prune_mask=None) -> ClientOutput:
    delta = jax.tree.map(jnp.subtract, carry.params, params)
    if param_prune_mask is not None:
      delta = jax.tree.map(jnp.multiply, delta, param_prune_mask)
    return ClientOutput(delta=delta, loss_sum=carry.loss_sum, num_seen=carry.num_seen,
                        num_steps=carry.num_steps)

  return init, step, finish


def make_client_update(apply_fn: ApplyFn, batch_fn: BatchFn,
                       optimizer: optax.GradientTransformation, spec: LocalSpec):
  """Builds `client_update` for ONE client as a device-side `lax.scan` over its steps.

  This is the GPU/TPU loop; on CPU, `clipjax.fl.training` drives the same step from the host.

  Args:
    apply_fn: model forward, `apply_fn(params, inputs, prune_mask) -> logits`.
    batch_fn: example gathering, `batch_fn(x, y, idx) -> (inputs, labels)`.
    optimizer: client optimiser (optax); its state starts fresh every round.
    spec: epochs and batch size.

  Returns:
    `client_update(params, x, y, valid, key, prune_mask=None, param_prune_mask=None)
    -> ClientOutput`. `prune_mask` ({layer: f32[n]}) masks unit outputs in the forward
    pass, so pruned units get exactly zero gradient; `param_prune_mask` (params-shaped 0/1)
    zeroes the returned delta at pruned coordinates, keeping its full fixed size.
  """
  init, step, finish = make_client_step(apply_fn, batch_fn, optimizer)

  def client_update(params, x, y, valid, key, prune_mask=None, param_prune_mask=None):
    idx, batch_valid = batch_indices(key, valid, spec)

    def body(carry, batch):
      return step(carry, x, y, batch[0], batch[1], prune_mask), None

    carry, _ = jax.lax.scan(body, init(params), (idx, batch_valid))
    return finish(carry, params, param_prune_mask)

  return client_update
