"""Lying clients and the plausible-report rule (clipjax.clip.reports) on known report sets."""

import numpy as np
import pytest

from clipjax.clip import broadcast
from clipjax.clip import keep, reports
from clipjax.clock import devices

TIERS = devices.Tiers(compute={"fast": 1e9, "slow": 5e8},
                      network={"fast": devices.NetworkTier(8e6, 16e6, 0.01),
                               "slow": devices.NetworkTier(4e6, 8e6, 0.02)})


def test_liars_are_a_seeded_fraction_of_the_population():
  a = reports.choose_liars(3, 50, 0.2)
  assert a.sum() == 10
  np.testing.assert_array_equal(a, reports.choose_liars(3, 50, 0.2))
  assert not np.array_equal(a, reports.choose_liars(4, 50, 0.2))
  assert not reports.choose_liars(3, 50, 0.0).any()
  assert reports.choose_liars(3, 50, 1.0).all()
  with pytest.raises(ValueError, match="liar fraction"):
    reports.choose_liars(0, 5, 1.5)


def test_liars_scale_both_times_and_the_honest_report_the_truth():
  fit, net = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.5, 0.5])
  f, n = reports.reported(fit, net, np.array([False, True, False]), 10.0)
  np.testing.assert_array_equal(f, [1.0, 20.0, 3.0])
  np.testing.assert_array_equal(n, [0.5, 5.0, 0.5])


def test_bounds_by_hand():
  # One epoch of 1e6 FLOPs per example; 1 to 100 examples; 1 MB down, 0.5 MB up, 2e6 mask
  # FLOPs, 5 or 6 messages; no jitter allowance (sigma 0).
  b = reports.plausible_bounds(TIERS, full_flops_per_example=1e6, max_examples=100, epochs=1,
                               download_bytes=[1e6, 1e6], upload_bytes=[5e5, 5e5],
                               mask_flops=[2e6, 2e6], messages=[5, 6], jitter_sigma=0.05,
                               sigmas=0.0)
  assert b.fit_lo == pytest.approx(1e6 / 1e9)
  assert b.fit_hi == pytest.approx(100 * 1e6 / 5e8)
  fastest = 8e6 / 16e6 + 4e6 / 8e6 + 5 * 0.01 + 2e6 / 1e9
  slowest = 8e6 / 8e6 + 4e6 / 4e6 + 6 * 0.02 + 2e6 / 5e8
  assert b.net_lo == pytest.approx(fastest) and b.net_hi == pytest.approx(slowest)
  wide = reports.plausible_bounds(TIERS, full_flops_per_example=1e6, max_examples=100, epochs=1,
                                  download_bytes=1e6, upload_bytes=5e5, mask_flops=2e6,
                                  messages=5, jitter_sigma=0.05, sigmas=4.0)
  assert wide.net_lo == pytest.approx(fastest * np.exp(-0.2))   # 4 sigmas of 0.05 each way
  assert wide.net_hi == pytest.approx((slowest - 0.02) * np.exp(0.2))  # 5 messages at most
  allowed = b.allows(np.array([0.01, 0.01, 0.1, 0.0]), np.array([1.2, 0.5, 1.2, 1.2]))
  np.testing.assert_array_equal(allowed, [True, False, True, False])


def _decide(known_fit, known_net, own_fit, own_net, valid=None):
  known = broadcast.KnownTimes(fit=np.asarray(known_fit, np.float64)[None],
                               net=np.asarray(known_net, np.float64)[None],
                               valid=np.ones((1, len(known_fit)), bool) if valid is None
                               else np.asarray(valid)[None])
  table = keep.make_flop_table(lambda p: p * p, p_min=0.5)
  s, p = broadcast.decide_keep_fractions(known, np.array([own_fit]), np.array([own_net]),
                                         straggler_fraction=0.2, rule="clip_compute",
                                         table=table, rho_min=None)
  return bool(s[0]), float(p[0])


def test_slow_claiming_liars_silence_a_true_straggler_and_the_rule_restores_it():
  # 10 honest peers with fit 1..1.9 s and net 1.2 s; the client itself is slow (fit 3 s).
  honest_fit = list(np.linspace(1.0, 1.9, 10))
  fit = honest_fit + [1.0] * 3
  net = [1.2] * 13
  liar = np.array([False] * 10 + [True] * 3)
  said_fit, said_net = reports.reported(np.array(fit), np.array(net), liar, 10.0)
  assert _decide(fit, net, 3.0, 1.2)[0]                    # honest reports: a straggler
  silenced, p = _decide(said_fit, said_net, 3.0, 1.2)      # 3 of 14 claim 12-22 s
  assert not silenced and p == 1.0
  b = reports.plausible_bounds(TIERS, full_flops_per_example=1e7, max_examples=300, epochs=1,
                               download_bytes=1e6, upload_bytes=5e5, mask_flops=2e6,
                               messages=[5, 6], jitter_sigma=0.05, sigmas=4.0)
  allowed = b.allows(said_fit, said_net)
  np.testing.assert_array_equal(allowed, ~liar)            # every lie is out of bounds
  restored, p = _decide(said_fit, said_net, 3.0, 1.2, valid=allowed)
  assert restored and p < 1.0


def test_fast_claiming_liars_push_honest_clients_into_pruning():
  # 3 peers slower than the client (3.7 s) claim 0.37 s: the client's rank rises past 80%.
  honest_fit = list(np.linspace(1.0, 1.9, 10))
  liar = np.array([False] * 10 + [True] * 3)
  fit, net = np.array(honest_fit + [2.5] * 3), np.full(13, 1.2)
  said_fit, said_net = reports.reported(fit, net, liar, 0.1)
  own = 1.8  # T = 3.0 s, below the honest T* = 3.34 s
  assert not _decide(fit, net, own, 1.2)[0]
  assert _decide(said_fit, said_net, own, 1.2)[0]          # T* = 2.94 s with the lies
