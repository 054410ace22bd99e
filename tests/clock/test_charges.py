"""The virtual clock: per-method charges (DESIGN 2.1) and `ClockModel` against hand arithmetic."""

import dataclasses

import numpy as np
import pytest

from clipjax import secagg
from clipjax.clock import charges as clock_lib
from clipjax.clock import devices, round_time

D = 1000
UNITS = {"hidden": np.array([8, 6, 8])}


def _charges(**kw):
  base = dict(kept_units=UNITS, kept_params=np.array([D, 700, D]), num_params=D)
  base.update(kw)
  return clock_lib.charges(**base)


@pytest.mark.parametrize("secure,broadcast,want", [
    (True, False, 5),    # download, AdvertiseKeys, ShareKeys, masked input, Unmasking
    (True, True, 6),     # ... and the relayed time broadcast
    (False, False, 2),   # download, upload
    (False, True, 4),    # ... AdvertiseKeys for the broadcast's keys, the broadcast
])
def test_each_client_pays_only_the_messages_it_takes_part_in(secure, broadcast, want):
  c = _charges(secure=secure, broadcast=broadcast, prg_streams=3)
  np.testing.assert_array_equal(c.messages, [want] * 3)


def test_secagg_upload_is_the_full_vector_and_plain_upload_the_trained_coordinates():
  secure = _charges(secure=True, prg_streams=np.array([2, 3, 4]))
  np.testing.assert_array_equal(secure.upload_bytes, [4 * (D + 1)] * 3)  # pruning cannot shrink it
  np.testing.assert_array_equal(secure.download_bytes, [4 * D] * 3)
  np.testing.assert_array_equal(secure.mask_words, np.array([2, 3, 4]) * (D + 1))
  doubled = _charges(secure=True, prg_streams=2, upload_vectors=2)
  np.testing.assert_array_equal(doubled.upload_bytes, [8 * (D + 1)] * 3)
  np.testing.assert_array_equal(doubled.mask_words, [4 * (D + 1)] * 3)
  plain = _charges(secure=False)
  np.testing.assert_array_equal(plain.upload_bytes, [4 * (D + 1), 4 * 701, 4 * (D + 1)])
  np.testing.assert_array_equal(plain.download_bytes, [4 * D] * 3)   # clients prune locally
  np.testing.assert_array_equal(plain.mask_words, [0, 0, 0])       # no SecAgg, no masks
  server_side = _charges(secure=False, server_prunes=True)           # FLuID sends sub-models
  np.testing.assert_array_equal(server_side.download_bytes, [4 * D, 4 * 700, 4 * D])


def test_broadcast_ciphertexts_count_both_ways():
  c = _charges(secure=True, broadcast=True, broadcast_bytes_sent=np.array([10, 20, 30]),
               broadcast_bytes_received=np.array([1, 2, 3]))
  np.testing.assert_array_equal(c.upload_bytes, 4 * (D + 1) + np.array([10, 20, 30]))
  np.testing.assert_array_equal(c.download_bytes, 4 * D + np.array([1, 2, 3]))


def test_histogram_words_ride_in_the_secagg_input_and_come_back_summed():
  c = _charges(secure=True, prg_streams=np.array([2, 3, 4]), histogram_words=128)
  np.testing.assert_array_equal(c.upload_bytes, [4 * (D + 1 + 128)] * 3)
  np.testing.assert_array_equal(c.download_bytes, [4 * (D + 128)] * 3)
  np.testing.assert_array_equal(c.mask_words, np.array([2, 3, 4]) * (D + 1 + 128))
  np.testing.assert_array_equal(c.messages, [5] * 3)  # no message of its own
  with pytest.raises(ValueError, match="histogram_words"):
    _charges(secure=False, histogram_words=128)


def test_bad_charges_are_rejected():
  with pytest.raises(ValueError, match="upload_vectors"):
    _charges(secure=True, upload_vectors=3)
  with pytest.raises(ValueError, match="kept_params"):
    _charges(secure=False, kept_params=np.array([D + 1, 0, 0]))


def test_clock_model_times_are_the_hand_computed_components():
  tiers = devices.Tiers(compute={"fast": 1e6, "slow": 5e5})
  population = devices.make_population(3, counts={"compute": 1}, seed=0, tiers=tiers)
  per_example = {(("hidden", 8),): 50.0, (("hidden", 6),): 30.0}
  clock = clock_lib.ClockModel(
      population=population, flops_per_example=lambda k: per_example[tuple(sorted(k.items()))],
      full_widths={"hidden": 8}, num_examples=np.array([10, 20, 30]), epochs=2, seed=0,
      jitter_sigma=0.0)
  c = _charges(secure=True, broadcast=True, prg_streams=np.array([2, 3, 4]))
  t = clock.times(0, c)
  prof = population.profile
  fit = np.array([50.0 * 10, 30.0 * 20, 50.0 * 30]) * 2 / prof.flops_per_s
  np.testing.assert_allclose(t.fit, fit)
  np.testing.assert_allclose(t.fit_full, np.array([50.0 * 10, 50.0 * 20, 50.0 * 30]) * 2
                             / prof.flops_per_s)
  np.testing.assert_allclose(t.blinding, c.mask_words * clock_lib.CHACHA_OPS_PER_WORD / prof.flops_per_s)
  np.testing.assert_allclose(t.upload, 8 * 4 * (D + 1) / prof.uplink_bps)
  np.testing.assert_allclose(t.download, 8 * 4 * D / prof.downlink_bps)
  np.testing.assert_allclose(t.latency, 6 * prof.latency_s)
  np.testing.assert_allclose(t.total, t.download + t.fit + t.blinding + t.upload + t.latency)
  fields = clock_lib.metrics_fields(t, c)
  assert fields["messages"] == [6, 6, 6]
  survivors = np.array([True, False, True])
  want = float(np.max(t.total[survivors]) + 0.25)
  assert round_time.round_time(t, survivors, 0.25) == pytest.approx(want)


def _charger_case(num):
  kept_units = {"hidden": np.array([8, 5, 8, 8, 6, 8, 8, 8])[:num]}
  kept_params = np.array([D, 600, D, D, 750, D, D, D])[:num]
  return kept_units, kept_params


@pytest.mark.parametrize("upload_vectors", [1, 2])
def test_round_charger_charges_one_stream_per_secagg_plus_neighbour_and_the_self_mask(
    upload_vectors):
  # SecAgg+ on 8 clients with k = 4: every client has 4 graph neighbours. Client 5 does not
  # advertise keys, so its neighbours mask with one peer fewer and it has none at all.
  setup = secagg.setup_round(8, protocol="secagg+", degree=4, threshold=3, seed=11,
                             allow_weak=True, dropouts=secagg.Dropouts(advertise_keys=[5]))
  degree = np.bincount(np.asarray(setup.edges).ravel(), minlength=8)
  np.testing.assert_array_equal(degree, [4] * 8)
  to_five = np.zeros(8, int)
  for a, b in np.asarray(setup.edges):
    if 5 in (a, b):
      to_five[b if a == 5 else a] += 1
  streams = 1 + degree - to_five
  streams[5] = 1                               # no keys: no pairwise masks, the self mask only
  assert sorted(streams.tolist()) == [1, 4, 4, 4, 4, 5, 5, 5]
  kept_units, kept_params = _charger_case(8)
  charger = clock_lib.RoundCharger(secagg_on=True, upload_vectors=upload_vectors,
                                   server_prunes=False)
  got = charger(kept_units, kept_params, D, setup, True, (np.full(8, 30), np.full(8, 40)), True)
  want = clock_lib.charges(kept_units=kept_units, kept_params=kept_params, num_params=D,
                           secure=True, upload_vectors=upload_vectors, prg_streams=streams,
                           broadcast=True, broadcast_bytes_sent=np.full(8, 30),
                           broadcast_bytes_received=np.full(8, 40), reference_download=True)
  for field in ("download_bytes", "upload_bytes", "messages", "mask_words"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
  # And by hand: (D + 1) words per stream per uploaded vector.
  np.testing.assert_array_equal(got.mask_words, streams * (D + 1) * upload_vectors)
  np.testing.assert_array_equal(got.kept_units["hidden"], kept_units["hidden"])


@pytest.mark.parametrize("secagg_on,with_setup", [(True, False), (False, True), (False, False)])
def test_round_charger_expands_no_masks_without_secagg_or_without_keys(secagg_on, with_setup):
  setup = (secagg.setup_round(5, protocol="secagg", threshold=5, seed=0, allow_weak=True)
           if with_setup else None)
  kept_units, kept_params = _charger_case(5)
  charger = clock_lib.RoundCharger(secagg_on=secagg_on, upload_vectors=1, server_prunes=True)
  got = charger(kept_units, kept_params, D, setup, False)
  want = clock_lib.charges(kept_units=kept_units, kept_params=kept_params, num_params=D,
                           secure=secagg_on, prg_streams=0, server_prunes=True)
  for field in ("download_bytes", "upload_bytes", "messages", "mask_words"):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
  np.testing.assert_array_equal(got.mask_words, np.zeros(5))
  if not secagg_on:  # in the clear FLuID's server sends each client the units it kept
    np.testing.assert_array_equal(got.download_bytes, 4 * kept_params)


def test_planes_charge_the_packed_bits_each_client_sends():
  # issue 26: 17-bit high plane with the weight word and 2 histogram words whole; the low
  # plane (18 bits) for clients 0 and 2 only; the low instance's masks D + 1 words a stream.
  planes = clock_lib.PlaneCharges(high_ring=17, low_ring=18, low=np.array([True, False, True]),
                                  low_streams=np.array([3, 0, 2]), histogram_words=2)
  got = _charges(secure=True, prg_streams=np.array([4, 4, 4]), histogram_words=2, planes=planes)
  high = -(-D * 17 // 8) + 4 * 3       # 2125 + the weight and histogram words
  low = -(-D * 18 // 8)                # 2250
  np.testing.assert_array_equal(got.upload_bytes, [high + low, high, high + low])
  np.testing.assert_array_equal(got.mask_words, 4 * (D + 1 + 2) + np.array([3, 0, 2]) * (D + 1))
  padded = _charges(secure=True, prg_streams=np.array([4, 4, 4]), histogram_words=2)
  np.testing.assert_array_equal(got.download_bytes, padded.download_bytes)
  np.testing.assert_array_equal(got.messages, padded.messages)  # both ride SecAgg's messages
  with pytest.raises(ValueError, match="need secure=True"):
    _charges(secure=False, planes=planes)
  with pytest.raises(ValueError, match="planes.histogram_words=2 differs"):
    _charges(secure=True, prg_streams=np.array([4, 4, 4]), planes=planes)


def test_a_high_only_client_reports_its_time_at_full_precision():
  planes = clock_lib.PlaneCharges(high_ring=17, low_ring=18, low=np.array([True, False, True]),
                                  low_streams=np.array([3, 0, 2]))
  charge = _charges(secure=True, prg_streams=np.array([4, 4, 4]), planes=planes)
  profile = devices.DeviceProfile(flops_per_s=np.full(3, 1e9), uplink_bps=np.array([8e6, 8e5, 8e6]),
                                  downlink_bps=np.full(3, 8e7), latency_s=np.full(3, 0.01))
  times = devices.client_times(profile, fit_flops=np.full(3, 1e8), upload_bytes=charge.upload_bytes,
                               download_bytes=charge.download_bytes,
                               mask_expansion_flops=charge.mask_words * 64.0,
                               protocol_messages=charge.messages)
  got = planes.full_precision_net(times, charge, D)
  np.testing.assert_allclose(got[[0, 2]], times.report_net[[0, 2]])  # they sent both planes
  low_s = 8.0 * -(-D * 18 // 8) / 8e5   # client 1's skipped low plane on its slow link
  np.testing.assert_allclose(got[1], times.report_net[1] + low_s + times.blinding[1])
  # With 2 histogram words: its masks were over D + 3 words a stream, the skipped ones D + 1;
  # the report counts the low ring of the whole cohort (19 bits, say), not this round's.
  wide = dataclasses.replace(planes, full_low_ring=19, histogram_words=2)
  charge = _charges(secure=True, prg_streams=np.array([4, 4, 4]), histogram_words=2,
                    planes=wide)
  times = devices.client_times(profile, fit_flops=np.full(3, 1e8), upload_bytes=charge.upload_bytes,
                               download_bytes=charge.download_bytes,
                               mask_expansion_flops=charge.mask_words * 64.0,
                               protocol_messages=charge.messages)
  got = wide.full_precision_net(times, charge, D)
  low_s = 8.0 * -(-D * 19 // 8) / 8e5
  np.testing.assert_allclose(got[1], times.report_net[1] + low_s
                             + times.blinding[1] * (D + 1) / (D + 3))
  # No low instance ran: everybody reports the low plane it did not send.
  gone = planes.without_low()
  assert not gone.low.any() and not gone.low_streams.any()
  none = _charges(secure=True, prg_streams=np.array([4, 4, 4]), planes=gone)
  times = devices.client_times(profile, fit_flops=np.full(3, 1e8), upload_bytes=none.upload_bytes,
                               download_bytes=none.download_bytes,
                               mask_expansion_flops=none.mask_words * 64.0,
                               protocol_messages=none.messages)
  added = gone.full_precision_net(times, none, D) - times.report_net
  np.testing.assert_allclose(added, 8.0 * -(-D * 18 // 8) / profile.uplink_bps + times.blinding)
