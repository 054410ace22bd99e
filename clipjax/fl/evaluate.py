"""Evaluation as sums and counts (never means of padded data), for ONE client.

The loop vmaps `evaluate_client` over the client axis and divides the summed counts
once, so every example weighs the same whatever client holds it.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

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
