"""Straggler self-identification from known times, and the time-report wire format."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax.clip import stragglers


def _decide(own, known, f=0.2, **kw):
  known = np.asarray(known, np.float32)
  return stragglers.straggler_decision(own[0], own[1], known[:, 0], known[:, 1], f, **kw)


def test_hand_case_twenty_clients():
  # T = 1..20 (fit = T - 1, net = 1). q = 0.8, h = 0.8 * 19 = 15.2: T* = 16 + 0.2 = 16.2.
  times = [(t - 1.0, 1.0) for t in range(1, 21)]
  for k in range(20):
    d = _decide(times[k], times[:k] + times[k + 1:])
    np.testing.assert_allclose(float(d.t_star), 16.2, rtol=1e-6)
    np.testing.assert_allclose(float(d.f_star), 15.2, rtol=1e-6)
    assert bool(d.is_straggler) == (k + 1 > 16.2)  # exactly clients 17..20


def test_matches_numpy_linear_quantile():
  rng = np.random.default_rng(0)
  for k_known in (1, 4, 9, 19, 49):
    known = rng.uniform(1, 10, (k_known, 2)).astype(np.float32)
    own = rng.uniform(1, 10, 2).astype(np.float32)
    for f in (0.0, 0.1, 0.2, 0.5):
      d = _decide(own, known, f)
      all_t = np.concatenate([[own.sum()], known.sum(1)])
      all_f = np.concatenate([[own[0]], known[:, 0]])
      np.testing.assert_allclose(float(d.t_star), np.quantile(all_t, 1 - f), rtol=1e-5)
      np.testing.assert_allclose(float(d.f_star), np.quantile(all_f, 1 - f), rtol=1e-5)


def test_quantile_edges():
  # f = 0: T* = max, nobody is a straggler, not even the slowest.
  assert not bool(_decide((9.0, 1.0), [(1.0, 1.0), (2.0, 1.0)], f=0.0).is_straggler)
  # Alone (no peer reports): T* = own time, not a straggler.
  d = _decide((5.0, 1.0), np.zeros((0, 2)))
  assert not bool(d.is_straggler) and float(d.t_star) == 6.0
  # Integer position: n = 6, q = 0.8, h = 4 exactly: T* = 5th smallest; equal is not slower.
  times = [(float(t), 0.0) for t in (1, 2, 3, 4, 5, 6)]
  d5 = _decide(times[4], times[:4] + times[5:])
  d6 = _decide(times[5], times[:5])
  assert float(d5.t_star) == 5.0 and not bool(d5.is_straggler) and bool(d6.is_straggler)
  # All equal: nobody is a straggler.
  assert not bool(_decide((1.0, 1.0), [(1.0, 1.0)] * 9).is_straggler)
  # Round 1: no reports yet, no pruning.
  assert not bool(_decide((100.0, 1.0), [(1.0, 1.0)] * 9, has_reports=False).is_straggler)


def test_invalid_reports_ignored_and_vmap():
  known = np.asarray([(1.0, 1.0), (2.0, 1.0), (1000.0, 0.0), (3.0, 1.0)], np.float32)
  valid = jnp.asarray([True, True, False, True])
  d = _decide((4.0, 0.5), known, f=0.25, valid=valid)
  np.testing.assert_allclose(float(d.t_star), np.quantile([4.5, 2, 3, 4], 0.75), rtol=1e-6)
  assert bool(d.is_straggler)
  # vmap over clients, each with its own K = 3 neighbour sample (SecAgg+ style), under jit.
  fits = jnp.asarray([1.0, 2.0, 3.0, 10.0])
  nets = jnp.ones(4)
  nbrs = jnp.asarray([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
  decide = jax.jit(jax.vmap(lambda i, nb: stragglers.straggler_decision(
      fits[i], nets[i], fits[nb], nets[nb], 0.25)))
  out = decide(jnp.arange(4), nbrs)
  np.testing.assert_array_equal(np.asarray(out.is_straggler), [False, False, False, True])


def test_bad_fraction():
  for f in (-0.1, 1.0, 1.5):
    with pytest.raises(ValueError, match="straggler_fraction"):
      _decide((1.0, 1.0), [(1.0, 1.0)], f=f)


def test_time_report_round_trip_and_errors():
  for fit, net in ((0.0, 0.0), (12.345678901234, 0.5), (1e-9, 3e4)):
    data = stragglers.encode_time_report(fit, net)
    assert isinstance(data, bytes) and len(data) == stragglers.TIME_REPORT_BYTES == 16
    assert stragglers.decode_time_report(data) == (fit, net)
  data = stragglers.encode_time_report(1.0, 2.0)
  for bad in (data[:-1], data + b"\x00", b""):
    with pytest.raises(ValueError, match="16 bytes"):
      stragglers.decode_time_report(bad)
  with pytest.raises(ValueError, match="finite"):
    stragglers.encode_time_report(float("nan"), 1.0)
  with pytest.raises(ValueError, match="finite"):
    stragglers.encode_time_report(1.0, -1.0)
  with pytest.raises(ValueError, match="finite"):
    stragglers.decode_time_report(np.asarray([-1.0, 1.0], "<f8").tobytes())


def test_network_stragglers_are_the_flagged_that_pruning_cannot_bring_under_t_star():
  from clipjax.clip import broadcast
  flagged = np.array([True, True, True, False])
  fit = np.array([2.0, 1.0, 0.5, 3.0])
  net = np.array([0.2, 1.0, 0.9, 5.0])
  # rho_min = 0.5, T* = 1.2: 1.2 (meets it), 1.5 (cannot), 1.15 (meets), not flagged.
  np.testing.assert_array_equal(broadcast.network_stragglers(flagged, fit, net, 1.2, 0.5),
                                [False, True, False, False])
