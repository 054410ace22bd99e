"""Model registry: `get_model(name)` returns a `ModelDef` (module, shapes, unit spec, widths).

Params are the flax 'params' collection *unwrapped*: `ModelDef.init` returns a plain nested dict
such as {"conv0": {"kernel": ..., "bias": ...}, ...}, and `ModelDef.apply` wraps it again.

Models: "vgg9" (CIFAR-10, [32, 32, 3] float32), "leaf_cnn" (FEMNIST, [28, 28, 1] float32),
"leaf_lstm" (Shakespeare, [80] int32 symbols of an 80-symbol vocabulary).

References:
  VGG-9: Wang et al., FedMA, ICLR 2020; FLuID, NeurIPS 2023.
  LEAF CNN and LSTM: Caldas et al., "LEAF: A Benchmark for Federated Settings", 2018.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from clipjax.models import convnet, leaf_lstm
from clipjax.models.units import ParamSlice, UnitLayer, UnitSpec, check_spec  # noqa: F401

KNOWN_MODELS = ("vgg9", "leaf_cnn", "leaf_lstm")


def num_params(params) -> int:
  """D: the number of parameters of a pytree of arrays (or of shape structs)."""
  return int(sum(math.prod(getattr(a, "shape", ())) for a in jax.tree.leaves(params)))


def scale_width(n: int, width: float) -> int:
  """round(width * n) (halves round up), at least 1."""
  return max(1, int(math.floor(width * n + 0.5)))


def _unit_spec(module: nn.Module, input_shape: tuple[int, ...]) -> UnitSpec:
  if isinstance(module, convnet.ConvNet):
    return convnet.convnet_unit_spec(module, input_shape)
  return leaf_lstm.lstm_unit_spec(module)


def _with_widths(module: nn.Module, widths: Mapping[str, int]) -> nn.Module:
  if isinstance(module, convnet.ConvNet):
    return convnet.with_convnet_widths(module, widths)
  return leaf_lstm.with_lstm_widths(module, widths)


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """A model and everything the FL code needs to know about it.

  Attributes:
    name: Registry name.
    module: The flax.linen module; `module.apply({"params": p}, x, prune_mask)`.
    input_shape: Per-example input shape.
    input_dtype: jnp.float32 (images) or jnp.int32 (symbols).
    num_classes: Logits per example.
    unit_spec: The prunable units (see `clipjax.models.units`).
    widths: ((layer name, units), ...) of every prunable layer, in spec order.
  """

  name: str
  module: nn.Module
  input_shape: tuple[int, ...]
  input_dtype: Any
  num_classes: int
  unit_spec: UnitSpec
  widths: tuple[tuple[str, int], ...]

  @property
  def width_dict(self) -> dict[str, int]:
    return dict(self.widths)

  def init(self, rng: jax.Array) -> dict:
    """Plain params dict (no 'params' wrapper) for a typed or raw PRNG key."""
    x = jnp.zeros((1, *self.input_shape), self.input_dtype)
    return dict(self.module.init(rng, x)["params"])

  def apply(self, params: Mapping, x: jax.Array,
            prune_mask: Optional[Mapping[str, jax.Array]] = None) -> jax.Array:
    """Logits [B, num_classes] for x [B, *input_shape].

    Args:
      params: Plain params dict from `init`.
      x: Inputs [B, *input_shape].
      prune_mask: None (no masking) or {layer: float32 [units] 0/1} for every prunable layer;
        multiplies each unit's output so pruned units get exactly zero gradient.

    Raises:
      ValueError: if prune_mask's layer names differ from the unit spec's.
    """
    chex.assert_shape(x, (None, *self.input_shape))
    if prune_mask is not None:
      expected = {layer.name for layer in self.unit_spec}
      if set(prune_mask) != expected:
        raise ValueError(f"prune_mask layers {sorted(prune_mask)} != model {self.name!r} "
                         f"prunable layers {sorted(expected)}")
    return self.module.apply({"params": params}, x, prune_mask)

  def with_widths(self, kept: Mapping[str, int]) -> "ModelDef":
    """The dense model with `kept[name]` units in each named prunable layer (others unchanged).

    Raises:
      ValueError: on an unknown layer name or a width < 1.
    """
    widths = self.width_dict
    for layer_name, n in kept.items():
      if layer_name not in widths:
        raise ValueError(f"unknown prunable layer {layer_name!r}; model {self.name!r} has "
                         f"{list(widths)}")
      if int(n) < 1:
        raise ValueError(f"width of {layer_name!r} must be >= 1, got {n}")
      widths[layer_name] = int(n)
    module = _with_widths(self.module, widths)
    return dataclasses.replace(
        self, module=module, unit_spec=_unit_spec(module, self.input_shape),
        widths=tuple(widths.items()))


def _make(name: str, module: nn.Module, input_shape: tuple[int, ...], input_dtype: Any,
          num_classes: int) -> ModelDef:
  if isinstance(module, convnet.ConvNet):
    widths = convnet.convnet_widths(module)
  else:
    widths = leaf_lstm.lstm_widths(module)
  return ModelDef(name, module, input_shape, input_dtype, num_classes,
                  _unit_spec(module, input_shape), tuple(widths.items()))


def _vgg9(num_classes: int, width: float) -> ModelDef:
  s = lambda n: scale_width(n, width)
  module = convnet.ConvNet(
      conv_features=tuple(s(n) for n in (32, 64, 128, 128, 256, 256)), kernel_size=3,
      pool_every=2, dense_features=(s(512), s(512)), num_classes=num_classes)
  return _make("vgg9", module, (32, 32, 3), jnp.float32, num_classes)


def _leaf_cnn(num_classes: int, width: float) -> ModelDef:
  s = lambda n: scale_width(n, width)
  module = convnet.ConvNet(conv_features=(s(32), s(64)), kernel_size=5, pool_every=1,
                           dense_features=(s(2048),), num_classes=num_classes)
  return _make("leaf_cnn", module, (28, 28, 1), jnp.float32, num_classes)


def _leaf_lstm(num_classes: int, width: float) -> ModelDef:
  module = leaf_lstm.LeafLSTM(vocab_size=80, embed_dim=8,
                              hidden_features=(scale_width(256, width),) * 2,
                              num_classes=num_classes)
  return _make("leaf_lstm", module, (80,), jnp.int32, num_classes)


_BUILDERS: dict[str, tuple[Callable[[int, float], ModelDef], int]] = {
    "vgg9": (_vgg9, 10), "leaf_cnn": (_leaf_cnn, 62), "leaf_lstm": (_leaf_lstm, 80)}


def get_model(name: str, *, num_classes: Optional[int] = None, width: float = 1.0) -> ModelDef:
  """Builds a registered model.

  Args:
    name: One of KNOWN_MODELS.
    num_classes: Logits (default: 10, 62, 80 for vgg9, leaf_cnn, leaf_lstm).
    width: Multiplier on every prunable layer's width (round, at least 1 unit).

  Raises:
    ValueError: unknown name, width <= 0, or num_classes < 1.
  """
  if name not in _BUILDERS:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(KNOWN_MODELS)}")
  if not width > 0:
    raise ValueError(f"width multiplier must be > 0, got {width}")
  builder, default_classes = _BUILDERS[name]
  num_classes = default_classes if num_classes is None else int(num_classes)
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  return builder(num_classes, float(width))
