"""The time broadcast under `secagg.simulate=sum`: the protocol's deliveries, bit for bit, with
no key drawn and nothing sealed; `verify` catches a difference."""

import numpy as np
import pytest

from clipjax import secagg
from clipjax.clip import broadcast
from clipjax.clip import keep as keep_lib

N = 14


def _times(seed, num=N):
  rng = np.random.default_rng(seed)
  return rng.uniform(1.0, 2.0, num), rng.uniform(0.5, 0.9, num)


def _setup(protocol, seed, simulate):
  drops = secagg.Dropouts(advertise_keys=[3, 11], share_keys=[0], rate=0.1)
  return secagg.setup_round(N, protocol=protocol, seed=seed, round_index=2, dropouts=drops,
                            simulate=simulate, threat=secagg.ThreatModel(dropout_fraction=0.4))


def _alive(setup, seed):
  reported = np.random.default_rng(seed + 100).random(N) < 0.8  # a few have no times yet
  return np.isin(np.arange(N), setup.advertised) & reported


def _same(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sum_delivers_what_the_protocol_opens(protocol, seed):
  fit, net = _times(seed)
  out = {}
  for mode in ("protocol", "sum"):
    setup = _setup(protocol, seed, mode)
    out[mode] = (setup, *broadcast.exchange_time_reports(setup, fit, net, _alive(setup, seed)))
  (p_setup, p_known, p_relay), (s_setup, s_known, s_relay) = out["protocol"], out["sum"]
  assert p_setup.advertised == s_setup.advertised and len(p_setup.advertised) < N
  for field in ("fit", "net", "valid"):
    assert _same(getattr(s_known, field), getattr(p_known, field)), field
  for field in ("sender", "receiver", "size"):
    assert _same(getattr(s_relay, field), getattr(p_relay, field)), field
  assert p_relay.bytes_relayed == s_relay.bytes_relayed > 0
  for a, b in zip(p_relay.bytes_per_client(N), s_relay.bytes_per_client(N)):
    assert _same(a, b)
  # Sizes are what sealing gave; under sum nothing was drawn, agreed or sealed.
  assert [len(c) for _, _, c in p_relay.transcript] == p_relay.size.tolist()
  assert s_relay.ciphertexts is None and not s_setup.server.public_keys
  assert not s_setup.server.relayed and not s_setup._peer_keys
  with pytest.raises(ValueError, match="simulate='sum' relays no ciphertext"):
    s_relay.transcript  # noqa: B018
  # Hence the same decisions.
  table = keep_lib.make_flop_table(lambda p: p * p, p_min=0.5, resolution=0.01)
  decide = lambda known: broadcast.decide_keep_fractions(  # noqa: E731
      known, fit, net, straggler_fraction=0.2, rule="clip_network", table=table, rho_min=None)
  for a, b in zip(decide(p_known), decide(s_known)):
    assert _same(a, b)


def test_routes_follow_the_graph_and_who_is_alive():
  setup = _setup("secagg+", 4, "sum")
  alive = _alive(setup, 4)
  routes = broadcast.report_routes(setup, alive)
  expected = [(u, v) for u in range(N) if alive[u] for v in sorted(setup.neighbours(u))]
  assert list(zip(routes.sender.tolist(), routes.receiver.tolist())) == expected
  for u, v, i in zip(routes.sender, routes.receiver, routes.slot):
    assert sorted(setup.neighbours(v))[i] == u  # u's report lands in u's column of v's row
  assert routes.width == max(len(setup.neighbours(u)) for u in range(N))


def test_a_bad_report_is_refused_in_every_mode():
  fit, net = _times(0)
  fit[5] = np.nan
  for mode in ("protocol", "sum"):
    with pytest.raises(ValueError, match="time report fit_s must be finite"):
      broadcast.exchange_time_reports(_setup("secagg", 0, mode), fit, net)


def test_verify_checks_the_deliveries(monkeypatch):
  fit, net = _times(1)
  setup = _setup("secagg+", 1, "verify")
  known, relay = broadcast.exchange_time_reports(setup, fit, net, _alive(setup, 1))
  assert relay.ciphertexts is not None and known.valid.any()  # the protocol's own outcome
  plain = broadcast._plain

  def one_bit_off(routes, reports):  # a broken sum path
    known, relay = plain(routes, reports)
    known.net.view(np.uint64)[routes.receiver[0], routes.slot[0]] ^= 1
    return known, relay

  monkeypatch.setattr(broadcast, "_plain", one_bit_off)
  with pytest.raises(secagg.SimulationMismatch,
                     match=r"^secagg round_index 2: simulate='sum' differs from the protocol in "
                           r"time reports net \(caught by verify\)$"):
    broadcast.exchange_time_reports(_setup("secagg+", 1, "verify"), fit, net)
