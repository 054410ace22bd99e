"""The bit-plane secure sum (issue 26): split and decode against a NumPy oracle, exact
unbiasedness, two instances under drop-outs at every stage and aborts, and the server's view."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import secagg
from clipjax.secagg import aggregate, blinding, chacha, chunk_input, plane_sum, planes, quantize
from clipjax.secagg import stream as stream_lib

BITS, HIGH = 24, 12
LOW = BITS - HIGH


def _np_split(q, noise, low_bits):
  """NumPy oracle of `planes.split`, in Python integers."""
  q = q.astype(np.int64)
  frac = q % (1 << low_bits)
  v = noise.astype(np.int64) >> (32 - low_bits)
  hi = q // (1 << low_bits) + (v < frac)
  return hi, q - (hi << low_bits) + (1 << low_bits) - 1


@pytest.mark.parametrize("low_bits", [1, 4, 12, 20])
def test_split_matches_numpy_oracle_and_recombines_exactly(low_bits):
  rng = np.random.default_rng(low_bits)
  q = rng.integers(0, 1 << BITS, size=5000, dtype=np.int64).astype(np.uint32)
  q[:4] = [0, (1 << BITS) - 1, 1 << low_bits, (1 << low_bits) - 1]
  noise = rng.integers(0, 1 << 32, size=q.shape, dtype=np.uint64).astype(np.uint32)
  hi, lo = (np.asarray(a) for a in planes.split(jnp.asarray(q), jnp.asarray(noise), low_bits))
  want_hi, want_lo = _np_split(q, noise, low_bits)
  np.testing.assert_array_equal(hi, want_hi)
  np.testing.assert_array_equal(lo, want_lo)
  assert hi.max() <= planes.max_plane_value("high", low_bits, BITS)
  assert lo.max() <= planes.max_plane_value("low", low_bits, BITS)
  # One client's decode is its code, exactly.
  got = planes.combine(hi[None], lo[None], 1, low_bits)
  np.testing.assert_array_equal(got[0], q.astype(np.int64))


def test_split_is_exactly_unbiased_over_every_uniform():
  """Every value of the l-bit uniform once: the mean of 2^l hi is q, with no error at all."""
  low_bits = 6
  q = np.array([0, 1, 37, 63, 64, 65, 1000, (1 << BITS) - 1], np.uint32)
  v = np.arange(1 << low_bits, dtype=np.uint32) << np.uint32(32 - low_bits)
  qq, vv = np.meshgrid(q, v, indexing="ij")
  hi, lo = (np.asarray(a, np.int64) for a in planes.split(jnp.asarray(qq), jnp.asarray(vv),
                                                         low_bits))
  np.testing.assert_array_equal((hi << low_bits).sum(1), q.astype(np.int64) << low_bits)
  np.testing.assert_array_equal((lo - (1 << low_bits) + 1).sum(1), 0)  # residuals: mean 0


def test_ring_bits_hold_the_sums_and_no_more():
  assert planes.ring_bits(20, "high", LOW, BITS) == 17  # docs/secagg.md's numbers
  assert planes.ring_bits(20, "low", LOW, BITS) == 18
  assert planes.ring_bits(20, "high", 16, BITS) == 13
  for n in (1, 2, 7, 20, 200):
    for which in planes.PLANES:
      m = planes.ring_bits(n, which, LOW, BITS)
      top = n * planes.max_plane_value(which, LOW, BITS)
      assert top < 2 ** m and (m == 1 or top >= 2 ** (m - 1))
  with pytest.raises(ValueError, match="more than 32 bits"):
    planes.ring_bits(1 << 20, "low", 20, BITS)
  with pytest.raises(ValueError, match=r"clip.high_bits=24 must be an integer in \[1, 23\]"):
    planes.check_high_bits(24, BITS)


def _oracle(x, w, result, seed, max_weight):
  """int64 decoded code sum from the NumPy oracle: q from `encode_inputs`, the plane uniforms
  from pycryptodome's ChaCha20, split in NumPy, summed over each instance's survivors."""
  n, dim = x.shape
  codes, _ = aggregate.weight_codes(w, n, BITS, max_weight)
  hi_s, lo_s = quantize.scale_pair(codes, 1.0)
  keys = aggregate.noise_keys(jax.random.key(seed), n)
  q = np.asarray(blinding.encode_inputs(jnp.asarray(x), jnp.asarray(hi_s), jnp.asarray(lo_s),
                                        jnp.asarray(codes), keys, clip=1.0, bits=BITS))[:, :dim]
  words = -(-dim // 16) * 16
  noise = chacha.host_keystream(np.asarray(keys), np.tile(planes.PLANE_NONCE, (n, 1)), 0,
                                words)[:, :dim]
  hi, lo = _np_split(q, noise, LOW)
  high_rows, low_rows = np.asarray(result.survivors), np.asarray(result.low_survivors)
  return ((hi[high_rows].sum(0) << LOW) + lo[low_rows].sum(0)
          - int(low_rows.sum()) * ((1 << LOW) - 1)), q, hi, lo


def _drops(n):
  return secagg.Dropouts(advertise_keys=[n - 1], share_keys=[0], masked_input=[1],
                         unmasking=[2])


@pytest.mark.parametrize("simulate", ["protocol", "sum", "verify"])
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_two_instances_decode_the_oracle_under_dropouts_at_every_stage(protocol, simulate):
  n, dim = 17, 45
  rng = np.random.default_rng(3)
  x = rng.uniform(-0.9, 0.9, size=(n, dim)).astype(np.float32)
  w = rng.integers(1, 100, n).astype(np.float64)
  high_only = np.zeros(n, bool)
  high_only[[4, 9, 1]] = True  # 1 also drops out at masked_input
  res = plane_sum.plane_sum(x, w, max_weight=100.0, bits=BITS, high_bits=HIGH,
                            high_only=high_only, protocol=protocol, dropouts=_drops(n), seed=7,
                            simulate=simulate)
  assert res.low_aborted == ""
  # The high survivors: everybody but the clients that dropped before masking.
  expected = np.ones(n, bool)
  expected[[n - 1, 0, 1]] = False
  np.testing.assert_array_equal(res.survivors, expected)
  np.testing.assert_array_equal(res.low_survivors, expected & ~high_only)
  want, q, hi, _ = _oracle(x, w, res, 7, 100.0)
  codes = planes.combine(res.high.encoded_sum[:dim], res.low.encoded_sum[:dim],
                         int(res.low_survivors.sum()), LOW)
  np.testing.assert_array_equal(codes, want)
  np.testing.assert_array_equal(  # the result is that sum decoded, at the public weight scale
      res.total, quantize.decode(want, int(res.survivors.sum()), 1.0, BITS) * 100.0)
  # Fast survivors contribute their codes exactly, network stragglers 2^l hi.
  s, fast = res.survivors, res.survivors & ~high_only
  np.testing.assert_array_equal(codes, q[fast].astype(np.int64).sum(0)
                                + (hi[s & high_only] << LOW).sum(0))
  # The weight word rides whole in the high plane, zero in the low one.
  codes_w, _ = aggregate.weight_codes(w, n, BITS, 100.0)
  assert int(res.high.encoded_sum[dim]) == int(codes_w[s].sum())
  assert int(res.low.encoded_sum[dim]) == 0
  np.testing.assert_allclose(res.weight_total, w[s].sum(), rtol=1e-5)


def test_every_client_sending_both_planes_gives_the_padded_sum_bit_for_bit():
  n, dim = 12, 70
  x = np.random.default_rng(5).uniform(-1, 1, size=(n, dim)).astype(np.float32)
  padded = secagg.secure_sum(x, bits=BITS, protocol="secagg", seed=11,
                             dropouts=secagg.Dropouts(masked_input=[3], unmasking=[5]))
  res = plane_sum.plane_sum(x, bits=BITS, high_bits=HIGH, high_only=np.zeros(n, bool),
                            protocol="secagg", seed=11,
                            dropouts=secagg.Dropouts(masked_input=[3], unmasking=[5]))
  np.testing.assert_array_equal(res.survivors, padded.survivors)
  np.testing.assert_array_equal(res.total, padded.total)
  assert res.weight_total == padded.weight_total


def test_an_aborted_low_instance_leaves_the_coarse_sum_and_a_high_abort_fails_the_round():
  n, dim = 10, 33
  x = np.random.default_rng(2).uniform(-1, 1, size=(n, dim)).astype(np.float32)
  members = np.arange(2, n)
  high = secagg.setup_round(n, protocol="secagg", seed=1)
  # The low instance loses 5 of its 8 clients at masked_input, below its t = 6.
  low = secagg.setup_round(len(members), protocol="secagg", threshold=6, seed=2,
                           dropouts=secagg.Dropouts(masked_input=[0, 1, 2, 3, 4]))
  stream = plane_sum.PlaneSumStream(high, low, members, dim=dim, bits=BITS, high_bits=HIGH,
                                    rng=jax.random.key(1))
  assert stream.low_running
  stream.add(np.arange(n), x)
  res = stream.finish()
  assert "aborted at masked_input" in res.low_aborted and res.low is None
  assert not res.low_survivors.any() and res.survivors.all()
  want, _, _, _ = _oracle(x, None, res, 1, None)
  np.testing.assert_array_equal(want, res.high.encoded_sum[:dim].astype(np.int64) << LOW)
  np.testing.assert_allclose(res.total, x.sum(0), atol=n * 2.0 / 2 ** HIGH)  # coarse, not lost
  # Too few clients for a low instance: it never starts; the round goes on.
  none = plane_sum.plane_sum(x, bits=BITS, high_bits=HIGH, high_only=np.arange(n) > 0, seed=4)
  assert "fewer than 2 clients" in none.low_aborted and not none.low_survivors.any()
  with pytest.raises(secagg.RoundAborted, match="masked_input"):
    plane_sum.plane_sum(x, bits=BITS, high_bits=HIGH, high_only=np.zeros(n, bool),
                        protocol="secagg", threshold=6, seed=4,
                        dropouts=secagg.Dropouts(masked_input=[0, 1, 2, 3, 4]))


def test_the_low_setup_inherits_the_high_dropouts_and_its_own_parameters():
  n = 20
  high = secagg.setup_round(n, protocol="secagg+", seed=3, simulate="sum",
                            dropouts=secagg.Dropouts(share_keys=[4, 6], masked_input=[11]))
  members = np.array([u for u in range(n) if u not in (6, 17)])
  low = plane_sum.low_setup(high, members, seed=9, protocol="secagg+", degree=8, threshold=5)
  local = {int(u): i for i, u in enumerate(members)}
  assert low.dropouts["share_keys"] == frozenset({local[4]})
  assert low.dropouts["masked_input"] == frozenset({local[11]})
  # The analysis at its own n (not the explicit k = 8, t = 5 of n = 20), against the cohort's
  # 4 colluders and 2 drop-outs.
  expect = secagg.choose_parameters(len(members), protocol="secagg+",
                                    threat=plane_sum.low_threat(high.params.threat, n, 18))
  assert (low.degree, low.threshold) == (expect.degree, expect.threshold)
  assert low.params.threat.counts(18) == (4, 2)


def test_the_server_sees_uniform_ring_words_and_no_plane_of_any_client():
  """What the server receives from one client in each instance is its plane plus masks,
  reduced to the ring: below 2^m, uniform, and never the plane itself."""
  n, dim = 6, 20000
  x = np.zeros((n, dim), np.float32)
  x[0] = np.where(np.arange(dim) % 2 == 0, -1.0, 1.0)  # extreme, structured input
  members = np.arange(n)
  for which, ring in (("high", planes.ring_bits(n, "high", LOW, BITS)),
                      ("low", planes.ring_bits(n, "low", LOW, BITS))):
    setup = secagg.setup_round(n, protocol="secagg", seed=1)
    s = stream_lib.SecureSumStream(setup, dim=dim, bits=BITS, rng=jax.random.key(1),
                                   noise_ids=members, plane=planes.Plane(which, LOW, ring))
    sent, _, _ = chunk_input.masked_partial(s.client_keys([0]), x[:1], clip=1.0, bits=BITS)
    y = sent[:dim].astype(np.int64)
    assert y.max() < 2 ** ring
    counts = np.bincount(y >> (ring - 4), minlength=16)  # top 4 bits of the ring word
    chi2 = ((counts - dim / 16) ** 2 / (dim / 16)).sum()
    assert chi2 < 50.0  # 15 dof: p < 1e-5 under uniformity
    unsent = secagg.setup_round(n, protocol="secagg", seed=1, simulate="sum")
    plain = stream_lib.SecureSumStream(unsent, dim=dim, bits=BITS, rng=jax.random.key(1),
                                       noise_ids=members, plane=planes.Plane(which, LOW, ring))
    word, _, _ = chunk_input.masked_partial(plain.client_keys([0]), x[:1], clip=1.0, bits=BITS)
    assert np.mean(word[:dim] == sent[:dim]) < 1e-3  # the plane itself never shows
    assert abs(np.corrcoef(y.astype(np.float64), x[0])[0, 1]) < 0.05


def test_a_network_straggler_has_no_part_in_the_low_instance():
  n = 8
  x = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32) * 0.1
  high_only = np.zeros(n, bool)
  high_only[[2, 5]] = True
  res = plane_sum.plane_sum(x, bits=BITS, high_bits=HIGH, high_only=high_only, protocol="secagg",
                            seed=3, dropouts=secagg.Dropouts(masked_input=[0, 5]),
                            threat=secagg.ThreatModel(0.1, 0.25))
  np.testing.assert_array_equal(res.low_members, [0, 1, 3, 4, 6, 7])
  server = res.low.setup.server
  assert set(server.public_keys) == set(range(6))  # the low numbering: members only
  assert set(server.masked_ids) == set(range(1, 6))  # member 0 (client 0) dropped
  for instance in (res.high, res.low):  # never both secrets of one client in one instance
    kinds = {}
    for _, owner, kind in instance.setup.server.revealed_shares:
      kinds.setdefault(owner, set()).add(kind)
    assert {"self_seed", "mask_key"} == set().union(*kinds.values())  # both kinds were asked
    assert all(len(k) == 1 for k in kinds.values())


def test_a_low_survivor_outside_the_high_sum_adds_a_residual_of_mean_zero_signed():
  """Client 2 drops out of the high instance only: its residual (here -1 or 0) still enters
  the low sum, and the decoded sum, negative, is not wrapped to a huge positive value."""
  n, dim = 6, 64
  x = np.full((n, dim), -1.0, np.float32)   # codes 0: high planes 0, residuals 0
  levels = (1 << BITS) - 1
  x[2] = (2 * ((1 << LOW) - 1) - levels) / levels  # code ~ 2^l - 1: high plane 1, residual -1
  high = secagg.setup_round(n, protocol="secagg", seed=1,
                            dropouts=secagg.Dropouts(masked_input=[2]))
  low = secagg.setup_round(n, protocol="secagg", seed=2)
  stream = plane_sum.PlaneSumStream(high, low, np.arange(n), dim=dim, bits=BITS, high_bits=HIGH,
                                    rng=jax.random.key(1))
  stream.add(np.arange(n), x)
  res = stream.finish()
  assert not res.survivors[2] and res.low_survivors[2]
  want, _, _, _ = _oracle(x, None, res, 1, None)
  assert (want < 0).any()  # the case this test is for
  np.testing.assert_array_equal(res.total, quantize.decode(want, n - 1, 1.0, BITS))
  np.testing.assert_allclose(res.total, -(n - 1.0), atol=2.0 / levels)  # the residual's bias: 0


def test_the_low_instance_counts_every_colluder_of_the_cohort():
  """Colluders choose to join the low instance: its (k, t) must withstand all of the cohort's,
  so a small low instance gets a larger fraction, or does not run."""
  threat = secagg.ThreatModel()  # 20% of 20: 4 colluders, 10%: 2 drop-outs
  low = plane_sum.low_threat(threat, 20, 16)
  assert low.counts(16) == (4, 2)
  high = secagg.setup_round(20, protocol="secagg", seed=1, simulate="sum")
  setup = plane_sum.low_setup(high, np.arange(16), seed=2, protocol="secagg")
  assert setup.threshold > 4  # four colluders cannot rebuild an honest client's secrets
  why = plane_sum.low_setup(high, np.arange(7), seed=2, protocol="secagg")
  assert "fewer than 2 honest" in why


def test_bad_planes_are_rejected_with_the_fix():
  setup = secagg.setup_round(4, protocol="secagg", seed=0)
  with pytest.raises(ValueError, match="cannot hold the sum"):
    stream_lib.SecureSumStream(setup, dim=4, bits=BITS, plane=planes.Plane("high", LOW, 12))
  with pytest.raises(ValueError, match="must be one of"):
    planes.Plane("middle", LOW, 17)
  with pytest.raises(ValueError, match="noise_ids must be 4 integer ids"):
    stream_lib.SecureSumStream(secagg.setup_round(4, protocol="secagg", seed=0), dim=4,
                               bits=BITS, noise_ids=[0, 1])
  with pytest.raises(ValueError, match="ascending distinct cohort ids"):
    plane_sum.PlaneSumStream(secagg.setup_round(4, protocol="secagg", seed=0), None, [2, 1],
                             dim=4, bits=BITS, high_bits=HIGH)
