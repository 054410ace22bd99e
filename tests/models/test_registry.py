"""Registry, parameter counts, width multipliers and input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.models import KNOWN_MODELS, get_model, scale_width
from clipjax.models.units import check_spec, ones_prune_mask


def _num_params(model_def):
  shapes = jax.eval_shape(model_def.init, jax.random.key(0))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


@pytest.mark.parametrize("name, expected", [
    ("vgg9", 3_491_530),  # DESIGN 3 / FedMA
    ("leaf_cnn", 6_603_710),  # 832 + 51,264 + 3136*2048+2048 + 2048*62+62
    ("leaf_lstm", 817_872),  # 640 + 4*(8*256+256*256+256) + 4*(2*256*256+256) + 256*80+80
])
def test_parameter_counts_at_width_one(name, expected):
  model_def = get_model(name)
  assert _num_params(model_def) == expected
  check_spec(model_def.unit_spec, jax.eval_shape(model_def.init, jax.random.key(0)))


def test_default_shapes_and_classes():
  assert get_model("vgg9").input_shape == (32, 32, 3)
  assert get_model("leaf_cnn").num_classes == 62
  lstm = get_model("leaf_lstm")
  assert lstm.input_shape == (80,) and lstm.input_dtype == jnp.int32 and lstm.num_classes == 80
  assert get_model("vgg9", num_classes=100).num_classes == 100


def test_width_multiplier_scales_every_prunable_layer():
  half = get_model("vgg9", width=0.5).width_dict
  assert half == {"conv0": 16, "conv1": 32, "conv2": 64, "conv3": 64, "conv4": 128,
                  "conv5": 128, "dense0": 256, "dense1": 256}
  assert get_model("leaf_cnn", width=0.01).width_dict == {"conv0": 1, "conv1": 1, "dense0": 20}
  assert get_model("leaf_lstm", width=0.25).width_dict == {"lstm0": 64, "lstm1": 64}
  assert scale_width(3, 0.5) == 2  # halves round up
  # conv 16-32-64-64-128-128, flatten 4*4*128, dense 256-256-10.
  expected = (3 * 9 * 16 + 16) + (16 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 9 * 64 + 64) \
      + (64 * 9 * 128 + 128) + (128 * 9 * 128 + 128) + (2048 * 256 + 256) + (256 * 256 + 256) \
      + (256 * 10 + 10)
  assert _num_params(get_model("vgg9", width=0.5)) == expected


def test_with_widths_builds_the_dense_sub_model():
  model_def = get_model("leaf_cnn", width=0.25)
  sub = model_def.with_widths({"conv1": 3})
  assert sub.width_dict == {"conv0": 8, "conv1": 3, "dense0": 512}
  params = jax.eval_shape(sub.init, jax.random.key(0))
  assert params["dense0"]["kernel"].shape == (7 * 7 * 3, 512)
  check_spec(sub.unit_spec, params)
  with pytest.raises(ValueError, match="unknown prunable layer"):
    model_def.with_widths({"logits": 3})
  with pytest.raises(ValueError, match=">= 1"):
    model_def.with_widths({"conv0": 0})


def test_unknown_model_and_bad_arguments():
  with pytest.raises(ValueError) as info:
    get_model("resnet18")
  for known in KNOWN_MODELS:
    assert known in str(info.value)
  with pytest.raises(ValueError, match="width"):
    get_model("vgg9", width=0.0)
  with pytest.raises(ValueError, match="num_classes"):
    get_model("vgg9", num_classes=0)


def test_prune_mask_with_wrong_layers_is_rejected():
  model_def = get_model("leaf_cnn", width=0.125)
  params = jax.eval_shape(model_def.init, jax.random.key(0))
  prune_mask = ones_prune_mask(model_def.unit_spec)
  del prune_mask["dense0"]
  with pytest.raises(ValueError, match="prune_mask layers"):
    model_def.apply(params, jnp.zeros((1, 28, 28, 1), jnp.float32), prune_mask)


def test_model_defs_are_hashable_and_equal_by_value():
  assert get_model("vgg9") == get_model("vgg9")
  assert hash(get_model("leaf_lstm")) == hash(get_model("leaf_lstm"))
  assert get_model("vgg9") != get_model("vgg9", width=0.5)
