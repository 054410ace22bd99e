"""Plain conv -> max-pool -> dense networks with unit masks: VGG-9 and the LEAF CNN.

Both models are instances of one `ConvNet`: a stack of same-padded ReLU convolutions with a
2x2/stride-2 max-pool after every `pool_every` convs, an NHWC flatten, ReLU dense layers and a
logits layer. Layer names are fixed so prune masks and unit specs can refer to them:
`conv0, conv1, ...`, `dense0, dense1, ...`, `logits`.

References:
  VGG-9 as used by Wang et al., "Federated Learning with Matched Averaging" (FedMA), ICLR 2020,
  and Wang et al., "FLuID", NeurIPS 2023 (conv 32-64-128-128-256-256, dense 512-512-10).
  LEAF CNN: Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv 1812.01097, 2018
  (FEMNIST model: conv5x5 32, pool, conv5x5 64, pool, dense 2048, dense 62).
"""

from __future__ import annotations

from typing import Mapping, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models.units import ParamSlice, UnitLayer, UnitSpec


def apply_unit_mask(x: jax.Array, prune_mask: Optional[Mapping[str, jax.Array]], name: str
                    ) -> jax.Array:
  """Multiplies the last (unit) axis of `x` by `prune_mask[name]`; identity when None."""
  if prune_mask is None:
    return x
  unit_mask = jnp.asarray(prune_mask[name]).astype(x.dtype)
  chex.assert_shape(unit_mask, (x.shape[-1],))
  return x * unit_mask


class ConvNet(nn.Module):
  """Conv/pool/dense classifier with per-unit output masks.

  Attributes:
    conv_features: Output channels of each conv layer.
    kernel_size: Square conv kernel size.
    pool_every: A 2x2 max-pool follows every `pool_every`-th conv.
    dense_features: Units of each hidden dense layer.
    num_classes: Logits.
  """

  conv_features: tuple[int, ...]
  kernel_size: int
  pool_every: int
  dense_features: tuple[int, ...]
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array, prune_mask: Optional[Mapping[str, jax.Array]] = None
               ) -> jax.Array:
    """Logits [B, num_classes] for images x [B, H, W, C].

    `prune_mask[name]` (float32 [units]) multiplies each conv's ReLU output per channel (before
    pooling) and each hidden dense layer's ReLU output; None means no masking.
    """
    k = self.kernel_size
    for i, features in enumerate(self.conv_features):
      name = f"conv{i}"
      x = nn.Conv(features, (k, k), padding="SAME", name=name)(x)
      x = apply_unit_mask(nn.relu(x), prune_mask, name)
      if (i + 1) % self.pool_every == 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)  # NHWC order: flat index = (h * W + w) * C + c
    for i, features in enumerate(self.dense_features):
      name = f"dense{i}"
      x = nn.Dense(features, name=name)(x)
      x = apply_unit_mask(nn.relu(x), prune_mask, name)
    return nn.Dense(self.num_classes, name="logits")(x)

  def unit_names(self) -> tuple[str, ...]:
    return (tuple(f"conv{i}" for i in range(len(self.conv_features)))
            + tuple(f"dense{i}" for i in range(len(self.dense_features))))

  def flatten_hw(self, input_shape: tuple[int, ...]) -> int:
    """h * w of the last conv's pooled output for per-example input shape (H, W, C)."""
    h, w = input_shape[0], input_shape[1]
    for _ in range(len(self.conv_features) // self.pool_every):
      h, w = h // 2, w // 2
    return h * w


def convnet_unit_spec(module: ConvNet, input_shape: tuple[int, ...]) -> UnitSpec:
  """Unit spec of a `ConvNet` for per-example input shape (H, W, C).

  A conv channel's group: its kernel column and bias, and its input-channel slice of the next
  conv kernel, or, for the last conv, its h*w rows of the first dense kernel (tile = h*w). A
  dense unit's group: its kernel column and bias and its row of the next dense/logits kernel.
  """
  convs = [(f"conv{i}", n) for i, n in enumerate(module.conv_features)]
  denses = [(f"dense{i}", n) for i, n in enumerate(module.dense_features)]
  consumers = [name for name, _ in convs[1:]] + [name for name, _ in denses] + ["logits"]
  layers = []
  for index, (name, size) in enumerate(convs + denses):
    nxt = consumers[index]
    is_last_conv = index == len(convs) - 1
    if nxt.startswith("conv"):
      outgoing = ParamSlice((nxt, "kernel"), -2, "outgoing")
    else:
      tile = module.flatten_hw(input_shape) if is_last_conv else 1
      outgoing = ParamSlice((nxt, "kernel"), 0, "outgoing", tile)
    layers.append(UnitLayer(name, size, (
        ParamSlice((name, "kernel"), -1, "incoming"),
        ParamSlice((name, "bias"), 0, "bias"),
        outgoing,
    )))
  return tuple(layers)


def with_convnet_widths(module: ConvNet, widths: Mapping[str, int]) -> ConvNet:
  """The same architecture with the given per-layer widths."""
  return module.clone(
      conv_features=tuple(widths[f"conv{i}"] for i in range(len(module.conv_features))),
      dense_features=tuple(widths[f"dense{i}"] for i in range(len(module.dense_features))),
      parent=None)


def convnet_widths(module: ConvNet) -> dict[str, int]:
  return dict(zip(module.unit_names(), module.conv_features + module.dense_features))
