"""Evaluation as sums and counts (never means of padded data), for ONE client.

The loop vmaps `evaluate_client` over the client axis and divides the summed counts
once, so every example weighs the same whatever client holds it.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np

from clipjax.fl.local import ApplyFn, BatchFn, masked_cross_entropy


@flax.struct.dataclass
class EvalSums:
  loss_sum: jax.Array
  correct: jax.Array
  count: jax.Array

  def summary(self) -> dict[str, float]:
    """Host-side totals over every axis: accuracy and mean loss."""
    count = float(jnp.sum(self.count))
    return {"test_loss": float(jnp.sum(self.loss_sum)) / max(count, 1.0),
            "test_accuracy": float(jnp.sum(self.correct)) / max(count, 1.0),
            "test_examples": int(count)}


def make_evaluate(apply_fn: ApplyFn, batch_fn: BatchFn, batch_size: int):
  """Builds `evaluate_client(params, x, y, valid) -> EvalSums` for one client."""

  def evaluate_client(params, x, y, valid):
    n = valid.shape[0]
    steps = -(-n // batch_size)
    slots = jnp.arange(steps * batch_size, dtype=jnp.int32)
    ok = jnp.pad(valid, (0, steps * batch_size - n))
    idx = jnp.where(slots < n, slots, 0).reshape(steps, batch_size)
    ok = ok.reshape(steps, batch_size)

    def step(sums, batch):
      b_idx, b_ok = batch
      inputs, labels = batch_fn(x, y, b_idx)
      logits = apply_fn(params, inputs, None)
      loss, count = masked_cross_entropy(logits, labels, b_ok)
      correct = jnp.sum((jnp.argmax(logits, -1) == labels) & b_ok).astype(jnp.float32)
      return EvalSums(sums.loss_sum + loss, sums.correct + correct, sums.count + count), None

    zero = jnp.zeros((), jnp.float32)
    sums, _ = jax.lax.scan(step, EvalSums(zero, zero, zero), (idx, ok))
    return sums

  return evaluate_client


class PooledEvaluator:
  """Evaluates ONE model on every client's valid examples, pooled into full batches.

  All clients are evaluated with the same (global) parameters, so their examples can share
  batches: the host lists the valid (client, slot) pairs once, and a host loop calls one
  jitted batch evaluation per `batch_size` examples. No device-side loop (on XLA:CPU a
  convolution inside one is slow, DESIGN 2.5) and no padded batches beyond the last one.
  Gives the same sums as `vmap(make_evaluate(...))` up to float summation order.

  Args:
    apply_fn: model forward.
    pooled_batch_fn: `(x, y, client[B], idx[B]) -> (inputs, labels)` over `[C, ...]` data.
    batch_size: examples per jitted call.
    valid: bool [C, N] of the evaluated data (host array).
  """

  def __init__(self, apply_fn: ApplyFn, pooled_batch_fn, batch_size: int, valid):
    pairs = np.argwhere(np.asarray(valid))  # [V, 2] (client, slot)
    steps = max(1, -(-len(pairs) // batch_size))
    padded = np.zeros((steps * batch_size, 2), np.int32)
    padded[:len(pairs)] = pairs
    ok = np.arange(steps * batch_size) < len(pairs)
    self._client = jnp.asarray(padded[:, 0].reshape(steps, batch_size))
    self._idx = jnp.asarray(padded[:, 1].reshape(steps, batch_size))
    self._ok = jnp.asarray(ok.reshape(steps, batch_size))
    self._steps = steps

    def batch_sums(params, x, y, client, idx, ok):
      inputs, labels = pooled_batch_fn(x, y, client, idx)
      logits = apply_fn(params, inputs, None)
      loss, count = masked_cross_entropy(logits, labels, ok)
      correct = jnp.sum((jnp.argmax(logits, -1) == labels) & ok).astype(jnp.float32)
      return EvalSums(loss, correct, count)

    self._batch = jax.jit(batch_sums)
    self._add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))

  def __call__(self, params, x, y) -> EvalSums:
    sums = None
    for s in range(self._steps):
      part = self._batch(params, x, y, self._client[s], self._idx[s], self._ok[s])
      sums = part if sums is None else self._add(sums, part)
    return sums
