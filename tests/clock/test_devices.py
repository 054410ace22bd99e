"""Device population, jitter and the virtual clock."""

import numpy as np
import pytest

from clipjax.clock import devices


def test_population_counts_exact_and_deterministic():
  pop = devices.make_population(50, straggler_fraction=0.2, kinds=("compute", "network", "both"),
                                seed=3)
  both = pop.compute_slow & pop.network_slow
  assert both.sum() == 3  # 10 stragglers split 4/3/3 in kind order
  assert (pop.compute_slow & ~pop.network_slow).sum() == 4
  assert (pop.network_slow & ~pop.compute_slow).sum() == 3
  assert pop.straggler.sum() == 10
  again = devices.make_population(50, straggler_fraction=0.2, kinds=("compute", "network", "both"),
                                  seed=3)
  other = devices.make_population(50, straggler_fraction=0.2, kinds=("compute", "network", "both"),
                                  seed=4)
  np.testing.assert_array_equal(pop.compute_slow, again.compute_slow)
  assert not np.array_equal(pop.straggler, other.straggler)
  tiers = devices.Tiers()
  np.testing.assert_array_equal(pop.profile.flops_per_s == tiers.compute["slow"], pop.compute_slow)
  np.testing.assert_array_equal(pop.profile.uplink_bps == 27e6, pop.network_slow)
  assert devices.make_population(20, seed=0).compute_slow.sum() == 4
  explicit = devices.make_population(10, counts={"network": 2, "both": 1}, seed=0)
  assert explicit.network_slow.sum() == 3 and explicit.compute_slow.sum() == 1


def test_population_bad_input():
  with pytest.raises(ValueError, match="straggler_fraction"):
    devices.make_population(10, straggler_fraction=1.0)
  with pytest.raises(ValueError, match="kinds"):
    devices.make_population(10, kinds=("gpu",))
  with pytest.raises(ValueError, match="exceed"):
    devices.make_population(3, counts={"compute": 4})
  with pytest.raises(ValueError, match="num_clients"):
    devices.make_population(0)


def test_jitter_lognormal_sigma():
  j = devices.round_jitter(seed=0, round_index=5, num_clients=20000, sigma=0.05)
  for factors in (j.compute, j.network):
    logs = np.log(factors)
    # n = 20000: the standard error of the mean is 0.05 / sqrt(n) = 3.5e-4 and of the standard
    # deviation about 0.05 / sqrt(2n) = 2.5e-4; tolerances are about 4 standard errors.
    assert abs(logs.mean()) < 1.5e-3
    assert abs(logs.std() - 0.05) < 1e-3
  again = devices.round_jitter(seed=0, round_index=5, num_clients=20000)
  np.testing.assert_array_equal(j.compute, again.compute)
  assert not np.array_equal(j.compute, devices.round_jitter(0, 6, 20000).compute)
  np.testing.assert_array_equal(devices.round_jitter(0, 1, 4, sigma=0.0).network, np.ones(4))


def test_client_times_against_hand_computation():
  profile = devices.DeviceProfile(flops_per_s=np.array([10e9, 5e9]),
                                  uplink_bps=np.array([40e6, 20e6]),
                                  downlink_bps=np.array([100e6, 50e6]),
                                  latency_s=np.array([0.02, 0.05]))
  jitter = devices.Jitter(compute=np.array([1.0, 2.0]), network=np.array([1.0, 0.5]))
  t = devices.client_times(profile, fit_flops=np.array([20e9, 10e9]), upload_bytes=5e6,
                           download_bytes=10e6, mask_expansion_flops=1e9, protocol_messages=4,
                           full_fit_flops=np.array([20e9, 20e9]), jitter=jitter)
  np.testing.assert_allclose(t.fit, [2.0, 4.0])
  np.testing.assert_allclose(t.fit_full, [2.0, 8.0])
  np.testing.assert_allclose(t.blinding, [0.1, 0.4])
  np.testing.assert_allclose(t.download, [0.8, 0.8])
  np.testing.assert_allclose(t.upload, [1.0, 1.0])
  np.testing.assert_allclose(t.latency, [0.08, 0.1])
  np.testing.assert_allclose(t.total, [3.98, 6.3])
  np.testing.assert_allclose(t.network, [1.88, 1.9])
  np.testing.assert_allclose(t.report_net, [1.98, 2.3])
  t2 = devices.client_times(profile, fit_flops=0.0, upload_bytes=0, download_bytes=0,
                            mask_expansion_s=np.array([0.5, 0.25]))
  np.testing.assert_allclose(t2.total, [0.5, 0.25])
  with pytest.raises(ValueError, match="not both"):
    devices.client_times(profile, fit_flops=1.0, upload_bytes=1, download_bytes=1,
                         mask_expansion_s=1.0, mask_expansion_flops=1.0)
  with pytest.raises(ValueError, match="upload_bytes"):
    devices.client_times(profile, fit_flops=1.0, upload_bytes=np.ones(3), download_bytes=1)
