"""Masked full-shape local training == training the extracted dense sub-network (DESIGN 2.5).

For each model type (conv, dense, LSTM) a client trains a few SGD steps with unit masks on
the full-shape model; the same client trains the dense sub-network of the kept units from
the extracted parameters; scattering the sub-network's delta back must give the masked
delta, with exact zeros at every pruned coordinate.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clipjax.data import example_batch
from clipjax.fl import local, training
from clipjax.models import get_model, units

CASES = [  # model, width, data kind
    ("leaf_cnn", 0.125, "images"),
    ("vgg9", 0.125, "images"),
    ("leaf_lstm", 0.0625, "text"),
]


def _client_data(model, kind, n, rng):
  if kind == "images":
    x = rng.integers(0, 256, size=(n, *model.input_shape)).astype(np.uint8)
    y = rng.integers(0, model.num_classes, size=(n,)).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y), jnp.ones((n,), bool)
  text = rng.integers(0, model.num_classes, size=(n + 80,)).astype(np.uint8)
  return jnp.asarray(text), jnp.zeros((0,), jnp.int32), jnp.ones((n,), bool)


@pytest.mark.parametrize("name,width,kind", CASES)
def test_masked_training_equals_dense_subnetwork(name, width, kind):
  rng = np.random.default_rng(0)
  model = get_model(name, width=width)
  params = model.init(jax.random.key(1))
  keep = {}
  for layer in model.unit_spec:
    k = rng.random(layer.size) < 0.6
    k[rng.integers(layer.size)] = True  # keep at least one unit
    keep[layer.name] = k
  prune_mask = {k: jnp.asarray(v, jnp.float32) for k, v in keep.items()}
  param_mask = units.param_prune_mask(model.unit_spec, prune_mask, params)
  x, y, valid = _client_data(model, kind, 12, rng)
  batch_fn = lambda xc, yc, idx: example_batch(kind, xc, yc, idx, seq_len=80)  # noqa: E731
  spec = local.LocalSpec(epochs=1, batch_size=4)
  key = jax.random.key(7)

  # The CPU default loop (the host loop; tests/fl/test_training.py checks it against the scan).
  first = lambda t: jax.tree.map(lambda a: a[0], t)  # noqa: E731
  batch = lambda t: jax.tree.map(lambda a: jnp.asarray(a)[None], t)  # noqa: E731
  full_train = training.make_trainer(model.apply, batch_fn, optax.sgd(0.5), spec, loop="host",
                                     client_batch=1)
  masked = first(full_train(params, x[None], y[None], valid[None], key[None],
                            batch(prune_mask), batch(param_mask)))

  sub_model = model.with_widths({k: int(v.sum()) for k, v in keep.items()})
  sub_params = jax.tree.map(jnp.asarray, units.extract_subnetwork(model.unit_spec, params, keep))
  sub_train = training.make_trainer(sub_model.apply, batch_fn, optax.sgd(0.5), spec, loop="host",
                                    client_batch=1)
  dense = first(sub_train(sub_params, x[None], y[None], valid[None], key[None]))
  scattered = units.scatter_subnetwork(model.unit_spec, jax.device_get(dense.delta), keep, like=params)

  assert int(masked.num_steps) == int(dense.num_steps) == 3
  np.testing.assert_allclose(masked.loss_sum, dense.loss_sum, rtol=1e-5)
  for (path, got), want, m, w in zip(jax.tree_util.tree_flatten_with_path(masked.delta)[0],
                                     jax.tree.leaves(scattered), jax.tree.leaves(param_mask),
                                     jax.tree.leaves(params)):
    got = np.asarray(got)
    # Pruned coordinates: exactly zero. Kept ones: the sub-network's update up to float32
    # summation order (the full-shape matmuls add exact zeros in a different order). A delta
    # is trained minus initial weights, so its absolute error floor is the float32 spacing
    # of the weights themselves (a few ulp of max|w|), whatever the size of the delta.
    assert np.all(got[np.asarray(m) == 0] == 0), path
    scale = max(float(np.abs(want).max()), 1e-6)
    ulp_floor = 4 * float(np.spacing(np.float32(np.abs(np.asarray(w)).max())))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=max(1e-5 * scale, ulp_floor),
                               err_msg=str(path))
    assert float(np.abs(want).max()) > 0 or not np.asarray(m).any(), path
