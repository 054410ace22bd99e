"""Analytic FLOPs against XLA's own cost analysis of the equivalent dense sub-model.

Tolerance: none in the default tests. `forward_flops` counts in XLA's convention (dot/conv
multiply-adds at non-padding taps as 2 FLOPs, 1 FLOP per elementwise op, 3 per 2x2 max-pool
output, 21 elementwise FLOPs per LSTM unit-step after XLA's logistic expansion, embed_dim + 6
per embedding lookup), and the measured difference is exactly 0 for every configuration in the
default tests, so they compare exactly. The LSTM is compiled with `unroll=True` (a Python loop
over time) because XLA's cost analysis counts a while-loop body once, not once per iteration.

The `slow` tests use full sizes, where two XLA effects appear (measured):
* XLA reports FLOPs as a float; above 2^24 its float32 rounding shows: VGG-9 at width 1 is off
  by 6 of 242,262,794 (2.5e-8 relative).
* In the 80-step unrolled LSTM, XLA's fusion duplicates one small elementwise producer, adding
  exactly 6 * H FLOPs (measured at H = 64, 96, 128: +384, +576, +768; 4.6e-5 relative at
  H = 64, 1.3e-5 at H = 256). This is compiler bookkeeping, not model work, so the analytic
  count leaves it out and the slow test allows rtol 1e-4.
"""

import dataclasses

import jax
import numpy as np
import pytest

from clipjax.models import get_model
from clipjax.models.flops import flop_fraction, forward_flops, keep_count, train_flops


def _xla_flops(model_def):
  params = jax.eval_shape(model_def.init, jax.random.key(0))
  x = jax.ShapeDtypeStruct((1, *model_def.input_shape), model_def.input_dtype)
  cost = jax.jit(model_def.apply).lower(params, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
    cost = cost[0]
  return cost["flops"]


def _random_kept(model_def, seed):
  rng = np.random.default_rng(seed)
  return {name: int(rng.integers(1, n + 1)) for name, n in model_def.widths}


def _check(model_def, kept, xla_model_def=None):
  sub = model_def.with_widths(kept)
  if xla_model_def is not None:
    sub = xla_model_def(sub)
  assert forward_flops(model_def, kept) == _xla_flops(sub)


@pytest.mark.parametrize("kept", [{}, {"conv0": 3, "conv1": 13, "dense0": 100}, 1, 2])
def test_leaf_cnn_flops_match_xla(kept):
  model_def = get_model("leaf_cnn", width=0.25 if kept else 1.0)
  if isinstance(kept, int):
    kept = _random_kept(model_def, seed=kept)
  _check(model_def, kept)


@pytest.mark.parametrize("kept", [{}, {"conv2": 5, "conv5": 1, "dense1": 7}, 3, 4])
def test_vgg9_flops_match_xla(kept):
  model_def = get_model("vgg9", width=0.25)
  if isinstance(kept, int):
    kept = _random_kept(model_def, seed=kept)
  _check(model_def, kept)


@pytest.mark.parametrize("kept", [{}, {"lstm0": 3}, 5, 6])
def test_leaf_lstm_flops_match_xla(kept):
  # A 6-step sequence keeps the unrolled compile short; FLOPs are linear in steps plus the
  # logits layer, and the analytic count reads the sequence length from input_shape.
  model_def = dataclasses.replace(get_model("leaf_lstm", width=0.125), input_shape=(6,))
  if isinstance(kept, int):
    kept = _random_kept(model_def, seed=kept)
  _check(model_def, kept,
         lambda sub: dataclasses.replace(sub, module=sub.module.clone(unroll=True)))


@pytest.mark.parametrize("scan_unroll", [1, 3])
def test_lstm_unroll_is_the_same_function(scan_unroll):
  model_def = get_model("leaf_lstm", width=0.0625)
  model_def = dataclasses.replace(model_def,
                                  module=model_def.module.clone(scan_unroll=scan_unroll))
  unrolled = dataclasses.replace(model_def, module=model_def.module.clone(unroll=True))
  params = jax.jit(model_def.init)(jax.random.key(0))
  x = jax.random.randint(jax.random.key(1), (2, 12), 0, 80)  # the modules take any length
  variables = {"params": params}
  np.testing.assert_allclose(jax.jit(model_def.module.apply)(variables, x),
                             jax.jit(unrolled.module.apply)(variables, x), rtol=1e-5, atol=1e-6)


def test_full_width_lstm_count():
  # Per example: 80 tokens * (8 + 6) + 80 steps * [(8*(8+256)*256 + 21*256)
  # + (8*(256+256)*256 + 21*256)] + 2*256*80 + 80.
  expected = 80 * 14 + 80 * ((8 * 264 * 256 + 21 * 256) + (8 * 512 * 256 + 21 * 256)) \
      + 2 * 256 * 80 + 80
  assert forward_flops(get_model("leaf_lstm")) == expected


def test_train_flops_and_fraction():
  model_def = get_model("leaf_cnn")
  fwd = forward_flops(model_def, {"dense0": 1024})
  assert train_flops(model_def, {"dense0": 1024}, num_examples=50, epochs=2) == 3 * fwd * 100
  assert flop_fraction(model_def, 1.0) == 1.0
  half = forward_flops(model_def, {"conv0": 16, "conv1": 32, "dense0": 1024})
  assert flop_fraction(model_def, 0.5) == half / forward_flops(model_def)
  # Interior layers scale with p^2: well below p, above p^2 (first and last layers scale ~p).
  for name in ("vgg9", "leaf_cnn", "leaf_lstm"):
    fractions = [flop_fraction(get_model(name), p) for p in (0.25, 0.5, 0.75, 1.0)]
    assert fractions == sorted(fractions)
    assert 0.25 < fractions[1] < 0.5
  assert keep_count(10, 0.3) == 3 and keep_count(10, 0.31) == 4 and keep_count(7, 1e-6) == 1
  with pytest.raises(ValueError, match="keep fraction"):
    flop_fraction(model_def, 0.0)
  with pytest.raises(ValueError, match="outside"):
    forward_flops(model_def, {"conv0": 33})


@pytest.mark.slow
def test_full_size_flops_match_xla():
  model_def = get_model("vgg9")
  np.testing.assert_allclose(forward_flops(model_def), _xla_flops(model_def), rtol=1e-7)
  lstm = get_model("leaf_lstm", width=0.25)  # 80 steps, H = 64
  unrolled = dataclasses.replace(lstm, module=lstm.module.clone(unroll=True))
  np.testing.assert_allclose(forward_flops(lstm), _xla_flops(unrolled), rtol=1e-4)
