"""Keep-fraction solver: monotone, within bounds, real FLOP function, both CLIP methods."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.clip import keep
from clipjax.clip.stragglers import StragglerDecision

# Toy model: input 64 -> hidden 128 -> hidden 128 -> 10 classes; FLOPs per dense = in * out.
SIZES = {"h1": 128, "h2": 128}


def toy_flop_fraction(p):
  h1 = math.ceil(p * 128 - 1e-9)
  h2 = math.ceil(p * 128 - 1e-9)
  return (64 * h1 + h1 * h2 + h2 * 10) / (64 * 128 + 128 * 128 + 128 * 10)


TABLE = keep.make_flop_table(toy_flop_fraction, resolution=1e-3)
EXACT = keep.make_flop_table(toy_flop_fraction, layer_sizes=SIZES)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.floats(-1.0, 2.0), st.floats(-1.0, 2.0))
def test_monotone_and_within_bounds(a, b):
  lo, hi = sorted((a, b))
  p_lo, p_hi = np.asarray(keep.keep_fraction_from_table(jnp.asarray([lo, hi]), TABLE))
  assert 0.5 <= p_lo <= p_hi <= 1.0
  # Affordable whenever rho >= rho_min.
  for rho, p in ((lo, p_lo), (hi, p_hi)):
    if rho >= toy_flop_fraction(0.5):
      assert toy_flop_fraction(float(p)) <= rho + 1e-6


def test_largest_affordable_and_not_p_equals_rho():
  rho = 0.6
  p = float(keep.keep_fraction_from_table(rho, EXACT))
  assert toy_flop_fraction(p) <= rho < toy_flop_fraction(p + 1 / 128)
  assert p > rho + 0.1  # interior layers scale ~p^2: p is well above rho
  assert float(keep.keep_fraction_from_table(1.0, TABLE)) == 1.0
  np.testing.assert_allclose(keep.keep_fraction_for_rho(0.6, toy_flop_fraction, 0.5, 1e-3),
                             p, atol=1e-3)


def test_default_rho_min_keeps_half():
  rho_min = keep.default_rho_min(toy_flop_fraction)
  assert rho_min == pytest.approx(toy_flop_fraction(0.5))
  assert float(keep.keep_fraction_from_table(rho_min, EXACT)) == 0.5
  assert float(keep.keep_fraction_from_table(0.0, EXACT)) == 0.5


def test_exact_grid_contains_unit_breakpoints():
  grid = keep.candidate_keep_fractions(0.5, layer_sizes={"a": 4, "b": 10})
  np.testing.assert_allclose(grid, [0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0])


def _decision(straggler, t_star, f_star):
  return StragglerDecision(jnp.asarray(straggler), jnp.float32(t_star), jnp.float32(f_star))


def test_methods():
  rho_min = keep.default_rho_min(toy_flop_fraction)
  d = _decision(True, t_star=10.0, f_star=6.0)
  # compute-aware: rho = F*/fit = 6/8.
  r = keep.target_rho(d, 8.0, 3.0, method="clip_compute", rho_min=rho_min)
  np.testing.assert_allclose(float(r), 0.75)
  # network-aware over-prunes: rho = (T* - net)/fit = (10 - 4)/8 vs compute 6/8 with net 3.
  r = keep.target_rho(d, 8.0, 5.0, method="clip_network", rho_min=rho_min)
  np.testing.assert_allclose(float(r), 5 / 8)
  # clipped to rho_min when the network alone exceeds T*; to 1 when rho > 1.
  r = keep.target_rho(d, 8.0, 12.0, method="clip_network", rho_min=rho_min)
  np.testing.assert_allclose(float(r), rho_min, rtol=1e-6)
  r = keep.target_rho(_decision(True, 30.0, 20.0), 8.0, 1.0, method="clip_compute", rho_min=0.3)
  assert float(r) == 1.0
  # non-stragglers keep everything.
  p = keep.keep_fraction(_decision(False, 10.0, 6.0), 8.0, 5.0, method="clip_network", table=EXACT)
  assert float(p) == 1.0
  # vmap over clients under jit, default rho_min from the (traced) table.
  ds = StragglerDecision(jnp.asarray([True, True, False]), jnp.full((3,), 10.0),
                         jnp.full((3,), 6.0))
  fn = jax.jit(jax.vmap(lambda d, f, n, t: keep.keep_fraction(d, f, n, method="clip_network",
                                                              table=t), (0, 0, 0, None)))
  ps = np.asarray(fn(ds, jnp.asarray([8.0, 8.0, 8.0]), jnp.asarray([5.0, 12.0, 1.0]), EXACT))
  assert ps[0] == float(keep.keep_fraction_from_table(5 / 8, EXACT)) and ps[1] == 0.5
  assert ps[2] == 1.0


def test_bad_input():
  with pytest.raises(ValueError, match="rho_min"):
    keep.target_rho(_decision(True, 1.0, 1.0), 1.0, 1.0, method="clip_compute", rho_min=0.0)
  with pytest.raises(ValueError, match="rho_min"):
    keep.target_rho(_decision(True, 1.0, 1.0), 1.0, 1.0, method="clip_compute", rho_min=1.5)
  with pytest.raises(ValueError, match="method"):
    keep.target_rho(_decision(True, 1.0, 1.0), 1.0, 1.0, method="fluid", rho_min=0.5)
  with pytest.raises(ValueError, match="p_min"):
    keep.make_flop_table(toy_flop_fraction, p_min=0.0)
  with pytest.raises(ValueError, match=r"flop_fraction\(1.0\)"):
    keep.make_flop_table(lambda p: 0.5 * p)
