"""The LEAF Shakespeare next-character LSTM with per-unit hidden-state masks.

Embedding (vocab 80 -> 8), stacked `flax.linen.LSTMCell` layers scanned over time with
`nn.scan`, and a dense logits layer on the last step's output. Layer names: `embed`,
`lstm0, lstm1, ...` (each holding the cell's `ii/if/ig/io` input kernels and `hi/hf/hg/ho`
recurrent kernels and biases), `logits`.

A unit mask multiplies the hidden state h of an LSTM layer at every step, before h feeds the
recurrence and the next layer. A pruned unit's h is then identically zero, so its gate columns,
its recurrent row and its row in the next layer get exactly zero gradient, and the kept units
compute what the extracted dense sub-network computes (its cell state c still evolves but never
leaves the unit).

References:
  Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv 1812.01097, 2018
  (Shakespeare model: embedding 8, 2 x LSTM 256, 80-way softmax).
  Hochreiter and Schmidhuber, "Long Short-Term Memory", Neural Computation 1997.
"""

from __future__ import annotations

from typing import Mapping, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.units import ParamSlice, UnitLayer, UnitSpec

INPUT_GATES = ("ii", "if", "ig", "io")
HIDDEN_GATES = ("hi", "hf", "hg", "ho")


def _plain_step(cell, carry, x_t):
  return cell(carry, x_t)


def _masked_step(cell, carry, x_t, unit_mask):
  (c, h), _ = cell(carry, x_t)
  h = h * unit_mask
  return (c, h), h


_SCAN = dict(variable_broadcast="params", split_rngs={"params": False}, out_axes=1)


def _scans(unroll: int):
  """`nn.scan` over time of the plain and the masked step, `unroll` steps per iteration."""
  plain = nn.scan(_plain_step, in_axes=1, unroll=unroll, **_SCAN)
  masked = nn.scan(_masked_step, in_axes=(1, nn.broadcast), unroll=unroll, **_SCAN)
  return plain, masked


def _python_loop(step, cell, carry, xs, *args):
  """The same recurrence as `nn.scan` over a list of steps, unrolled in Python."""
  ys = []
  for x_t in xs:
    carry, y = step(cell, carry, x_t, *args)
    ys.append(y)
  return carry, ys


class LeafLSTM(nn.Module):
  """Embedding -> stacked LSTMs -> dense on the last step.

  Attributes:
    vocab_size: Input symbols.
    embed_dim: Embedding width (not prunable).
    hidden_features: Hidden units of each LSTM layer.
    num_classes: Output symbols.
    unroll: If True, a Python loop over time instead of `nn.scan` (same params, same function);
      FLOP tests use it because XLA's cost analysis counts a while-loop body only once.
    scan_unroll: Time steps per iteration of the scan. 1 measured fastest on XLA:CPU
      (`scripts/bench_train.py --models=leaf_lstm --lstm_unroll=2,8`; docs/benchmarks.md). A
      variant with the four gates fused into one [H, 4H] matmul and the input projection hoisted
      out of the time loop was also measured (20% slower on the 2-core CPU) and not kept.
  """

  vocab_size: int
  embed_dim: int
  hidden_features: tuple[int, ...]
  num_classes: int
  unroll: bool = False
  scan_unroll: int = 1

  @nn.compact
  def __call__(self, tokens: jax.Array, prune_mask: Optional[Mapping[str, jax.Array]] = None
               ) -> jax.Array:
    """Logits [B, num_classes] for int32 tokens [B, T]."""
    chex.assert_rank(tokens, 2)
    batch = tokens.shape[0]
    embed = nn.Embed(self.vocab_size, self.embed_dim, name="embed")
    if self.unroll:
      # Per-step lookups: one [B, T] gather would be fused into all T consumers by XLA and its
      # index arithmetic recounted T times in the cost analysis.
      x = [embed(tokens[:, t]) for t in range(tokens.shape[1])]  # T x [B, E]
    else:
      x = embed(tokens)  # [B, T, E]
    for i, features in enumerate(self.hidden_features):
      name = f"lstm{i}"
      cell = nn.LSTMCell(features, name=name)
      zeros = jnp.zeros((batch, features), jnp.float32)
      carry = (zeros, zeros)  # (c, h), as flax's LSTMCell orders it
      plain_scan, masked_scan = _scans(self.scan_unroll)
      if prune_mask is None:
        step, scan, args = _plain_step, plain_scan, ()
      else:
        unit_mask = jnp.asarray(prune_mask[name]).astype(jnp.float32)
        chex.assert_shape(unit_mask, (features,))
        step, scan, args = _masked_step, masked_scan, (unit_mask,)
      if self.unroll:
        _, x = _python_loop(step, cell, carry, x, *args)
      else:
        _, x = scan(cell, carry, x, *args)
    return nn.Dense(self.num_classes, name="logits")(x[-1] if self.unroll else x[:, -1])

  def unit_names(self) -> tuple[str, ...]:
    return tuple(f"lstm{i}" for i in range(len(self.hidden_features)))


def lstm_unit_spec(module: LeafLSTM) -> UnitSpec:
  """Unit spec of a `LeafLSTM`.

  Unit j of layer l: column j of its 4 input kernels and 4 recurrent kernels, its 4 gate biases
  (on the h* Dense layers), row j of its 4 recurrent kernels, and row j of the next layer's 4
  input kernels (or of the logits kernel).
  """
  names = module.unit_names()
  layers = []
  for index, (name, size) in enumerate(zip(names, module.hidden_features)):
    slices = [ParamSlice((name, g, "kernel"), -1, "incoming") for g in INPUT_GATES]
    slices += [ParamSlice((name, g, "kernel"), -1, "incoming") for g in HIDDEN_GATES]
    slices += [ParamSlice((name, g, "bias"), 0, "bias") for g in HIDDEN_GATES]
    slices += [ParamSlice((name, g, "kernel"), 0, "outgoing") for g in HIDDEN_GATES]
    if index + 1 < len(names):
      slices += [ParamSlice((names[index + 1], g, "kernel"), 0, "outgoing") for g in INPUT_GATES]
    else:
      slices.append(ParamSlice(("logits", "kernel"), 0, "outgoing"))
    layers.append(UnitLayer(name, size, tuple(slices)))
  return tuple(layers)


def with_lstm_widths(module: LeafLSTM, widths: Mapping[str, int]) -> LeafLSTM:
  """The same architecture with the given per-layer hidden widths."""
  return module.clone(hidden_features=tuple(widths[n] for n in module.unit_names()), parent=None)


def lstm_widths(module: LeafLSTM) -> dict[str, int]:
  return dict(zip(module.unit_names(), module.hidden_features))
