"""Analytic FLOPs of the kept sub-network, in XLA's own counting convention.

The client cost model (DESIGN 2.1) charges a client for the FLOPs its kept sub-network really
executes. `forward_flops` counts, per example, exactly what XLA's HLO cost analysis reports for
the equivalent dense sub-model compiled on CPU:

* dot / conv: 2 FLOPs per multiply-add; a SAME-padded conv only at taps that fall inside the
  input (XLA does not count multiplications by padding);
* every elementwise add, multiply, max (ReLU) or divide: 1 FLOP per element;
* 2x2 max-pool: window - 1 = 3 comparisons per output element;
* LSTM: per step and hidden unit, the 4 input and 4 recurrent gate dots, plus 21 elementwise
  FLOPs: 4 bias adds, 4 gate sums, 3 sigmoids as 1 / (1 + exp(-x)) after XLA's logistic
  expansion (negate, add, divide each; exp is a transcendental, not a FLOP), f*c + i*g (3) and
  o * tanh(c) (1; tanh is a transcendental);
* embedding lookup: embed_dim + 6 per token (`jnp.take`'s default fill mode: 6 index
  bounds-check/wrap ops and a select over the looked-up row); reshapes and slices: 0.

Tests compare these numbers with `jax.jit(f).lower(...).compile().cost_analysis()["flops"]`.

References:
  CLIP, arXiv 2510.16694 (cost model driven by executed FLOPs); backward = 2 x forward as in
  Kaplan et al., "Scaling Laws for Neural Language Models", 2020.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

from clipjax.models import ModelDef
from clipjax.models.convnet import ConvNet
from clipjax.models.leaf_lstm import LeafLSTM

LSTM_ELEMENTWISE_PER_UNIT_STEP = 21
EMBED_INDEX_FLOPS_PER_TOKEN = 6
POOL_WINDOW = 4


def keep_count(n: int, p: float) -> int:
  """ceil(p * n) kept units, guarded against float error (0.3 * 10 -> 3, not 4), at least 1."""
  return max(1, math.ceil(round(p * n, 9)))


def _same_conv_taps(n: int, k: int) -> int:
  """(output position, kernel tap) pairs inside the input along one SAME, stride-1 axis."""
  lo = (k - 1) // 2
  return sum(min(n, o - lo + k) - max(0, o - lo) for o in range(n))


def _convnet_flops(module: ConvNet, input_shape: tuple[int, ...]) -> int:
  h, w, channels = input_shape
  k = module.kernel_size
  flops = 0
  for i, features in enumerate(module.conv_features):
    flops += 2 * _same_conv_taps(h, k) * _same_conv_taps(w, k) * channels * features
    flops += 2 * h * w * features  # bias add, ReLU
    channels = features
    if (i + 1) % module.pool_every == 0:
      h, w = h // 2, w // 2
      flops += (POOL_WINDOW - 1) * h * w * features
  fan_in = h * w * channels
  for features in module.dense_features:
    flops += 2 * fan_in * features + 2 * features  # dot, bias add, ReLU
    fan_in = features
  return flops + 2 * fan_in * module.num_classes + module.num_classes


def _lstm_flops(module: LeafLSTM, input_shape: tuple[int, ...]) -> int:
  (steps,) = input_shape
  fan_in = module.embed_dim
  flops = steps * (module.embed_dim + EMBED_INDEX_FLOPS_PER_TOKEN)
  for hidden in module.hidden_features:
    per_step = 4 * 2 * (fan_in + hidden) * hidden + LSTM_ELEMENTWISE_PER_UNIT_STEP * hidden
    flops += steps * per_step
    fan_in = hidden
  return flops + 2 * fan_in * module.num_classes + module.num_classes


def _kept_model(model_def: ModelDef, kept: Optional[Mapping[str, int]]) -> ModelDef:
  kept = dict(kept or {})
  widths = model_def.width_dict
  for name, n in kept.items():
    if name in widths and not 1 <= int(n) <= widths[name]:
      raise ValueError(f"kept[{name!r}] = {n} outside [1, {widths[name]}]")
  return model_def.with_widths(kept)


def forward_flops(model_def: ModelDef, kept: Optional[Mapping[str, int]] = None) -> int:
  """Forward FLOPs per example of the sub-network keeping `kept[name]` units per layer.

  Args:
    model_def: The full model.
    kept: Layer name -> kept units; missing layers (or None) keep all their units.

  Returns:
    FLOPs in XLA's counting convention (see the module docstring).

  Raises:
    ValueError: unknown layer, or a count outside [1, width].
  """
  sub = _kept_model(model_def, kept)
  if isinstance(sub.module, ConvNet):
    return _convnet_flops(sub.module, sub.input_shape)
  if isinstance(sub.module, LeafLSTM):
    return _lstm_flops(sub.module, sub.input_shape)
  raise ValueError(f"no FLOP model for module type {type(sub.module).__name__}")


def train_flops(model_def: ModelDef, kept: Optional[Mapping[str, int]], num_examples: int,
                epochs: int) -> int:
  """Local training FLOPs: 3 x forward (backward = 2 x forward) x examples x epochs."""
  if num_examples < 0 or epochs < 0:
    raise ValueError(f"num_examples and epochs must be >= 0, got {num_examples}, {epochs}")
  return 3 * forward_flops(model_def, kept) * int(num_examples) * int(epochs)


def flop_fraction(model_def: ModelDef, p: float) -> float:
  """FLOPs keeping keep_count(n, p) units in every prunable layer / dense FLOPs.

  Raises:
    ValueError: p outside (0, 1].
  """
  if not 0.0 < p <= 1.0:
    raise ValueError(f"keep fraction p must be in (0, 1], got {p}")
  kept = {name: keep_count(n, p) for name, n in model_def.widths}
  return forward_flops(model_def, kept) / forward_flops(model_def)
