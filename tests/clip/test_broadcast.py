"""The encrypted straggler time broadcast: round trip, privacy from the server, tampering."""

import numpy as np
import pytest

from clipjax import secagg
from clipjax.clip import broadcast
from clipjax.clip import keep as keep_lib
from clipjax.clip import stragglers


def _times(num):
  rng = np.random.default_rng(3)
  fit = rng.uniform(1.0, 2.0, num)
  net = rng.uniform(0.5, 0.9, num)
  fit[[2, 5]] *= 1.5  # two slow CPUs
  return fit, net


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_reports_round_trip_to_neighbours_only(protocol):
  num = 12
  fit, net = _times(num)
  setup = secagg.setup_round(num, protocol=protocol, seed=5, round_index=3)
  known, relay = broadcast.exchange_time_reports(setup, fit, net)
  for v in range(num):
    peers = sorted(setup.neighbours(v))
    assert known.valid[v].sum() == len(peers)
    np.testing.assert_array_equal(known.fit[v, :len(peers)], fit[peers])
    np.testing.assert_array_equal(known.net[v, :len(peers)], net[peers])
  expected_messages = sum(len(setup.neighbours(u)) for u in range(num))
  assert len(relay.transcript) == expected_messages
  if protocol == "secagg":
    assert expected_messages == num * (num - 1)
  else:
    assert expected_messages < num * (num - 1)


def test_server_transcript_holds_no_time_in_the_clear():
  num = 8
  fit, net = _times(num)
  setup = secagg.setup_round(num, protocol="secagg", seed=1)
  _, relay = broadcast.exchange_time_reports(setup, fit, net)
  clear = [stragglers.encode_time_report(float(f), float(n)) for f, n in zip(fit, net)]
  pieces = {c[i:i + 8] for c in clear for i in (0, 8)}  # each float64 on its own
  for _, _, ciphertext in relay.transcript:
    assert len(ciphertext) > stragglers.TIME_REPORT_BYTES  # nonce and tag travel too
    assert not any(p in ciphertext for p in pieces)


def test_tampered_or_misrouted_report_is_rejected():
  setup = secagg.setup_round(4, protocol="secagg", seed=2)
  sealed = secagg.seal_for_peer(setup, 0, 1, stragglers.encode_time_report(1.0, 2.0))
  flipped = bytearray(sealed)
  flipped[-1] ^= 1
  with pytest.raises(ValueError):
    secagg.open_from_peer(setup, 1, 0, bytes(flipped))
  with pytest.raises(ValueError):  # relayed to the wrong receiver
    secagg.open_from_peer(setup, 2, 0, sealed)
  assert stragglers.decode_time_report(secagg.open_from_peer(setup, 1, 0, sealed)) == (1.0, 2.0)


def test_decisions_from_relayed_times_match_clear_times_and_drop_outs_are_skipped():
  num = 10
  fit, net = _times(num)
  setup = secagg.setup_round(num, protocol="secagg", seed=4)
  alive = np.ones(num, bool)
  alive[7] = False
  known, _ = broadcast.exchange_time_reports(setup, fit, net, alive)
  for v in range(num):  # every peer heard from the 8 other alive clients, never from 7
    assert known.valid[v].sum() == (num - 1) - (v != 7)
  table = keep_lib.make_flop_table(lambda p: p * p, p_min=0.5, resolution=0.01)
  is_straggler, keep = broadcast.decide_keep_fractions(
      known, fit, net, straggler_fraction=0.2, rule="clip_compute", table=table, rho_min=None)
  total = fit + net
  for k in range(num):
    others = [v for v in range(num) if v != k and v != 7]
    t_star = np.quantile(np.concatenate([[total[k]], total[others]]), 0.8)
    assert bool(is_straggler[k]) == bool(total[k] > t_star)
  assert np.all(keep[~is_straggler] == 1.0)
  assert np.all((keep[is_straggler] >= 0.5) & (keep[is_straggler] < 1.0))
