"""Issue 24 item 7: each round's SecAgg+ graph is fixed only once its participants committed.

The graph's labels come from the SHA-256 of the nonces every advertised client sends with its
public keys (`graph_randomness="committed"`, the default), so any client can recompute it from
what the server forwards, and nobody (colluders included) knows it before AdvertiseKeys ends.
"""

import numpy as np
import pytest

from clipjax import secagg
from clipjax.secagg import graph, protocol


def _setup(n=20, seed=3, **kwargs):
  kwargs.setdefault("simulate", "sum")
  return secagg.setup_round(n, protocol="secagg+", seed=seed, **kwargs)


def test_a_client_recomputes_the_graph_from_the_forwarded_nonces():
  s = _setup()
  nonces = s.server.graph_nonces
  assert sorted(nonces) == list(s.advertised)
  assert all(len(v) == graph.GRAPH_NONCE_BYTES for v in nonces.values())
  recomputed = graph.random_harary_graph(
      s.num_clients, s.degree, graph.committed_seed(s.round_index, s.num_clients, s.degree,
                                                    nonces))
  np.testing.assert_array_equal(s.edges, recomputed)


def test_the_graph_is_fixed_by_what_the_advertised_clients_commit():
  everyone = _setup(n=50)
  one_missing = _setup(n=50, dropouts=secagg.Dropouts(advertise_keys=[7]))
  assert 7 not in one_missing.server.graph_nonces
  assert not np.array_equal(everyone.edges, one_missing.edges)
  # any one client's nonce moves the seed
  nonces = dict(everyone.server.graph_nonces)
  base = graph.committed_seed(0, 50, everyone.degree, nonces)
  nonces[11] = bytes(graph.GRAPH_NONCE_BYTES)
  assert graph.committed_seed(0, 50, everyone.degree, nonces) != base
  # and the round index is bound in: the same nonces give another graph next round
  assert graph.committed_seed(1, 50, everyone.degree, everyone.server.graph_nonces) != base


def test_a_seeded_simulation_is_reproducible_and_a_deployment_is_not_predictable():
  a, b = _setup(n=50, seed=5), _setup(n=50, seed=5)
  np.testing.assert_array_equal(a.edges, b.edges)
  assert a.server.graph_nonces == b.server.graph_nonces
  assert not np.array_equal(a.edges, _setup(n=50, seed=6).edges)
  # seed=None: the nonces come from the OS, so two rounds' graphs differ
  c, d = _setup(n=50, seed=None), _setup(n=50, seed=None)
  assert c.server.graph_nonces != d.server.graph_nonces
  assert not np.array_equal(c.edges, d.edges)


def test_the_seed_alone_still_gives_the_graph_runs_stored_before_it_had():
  s = _setup(seed=9, graph_randomness="seed")
  np.testing.assert_array_equal(s.edges, graph.random_harary_graph(20, s.degree, 9))
  assert s.server.graph_nonces == {}
  with pytest.raises(ValueError, match="graph_randomness='hash' is unknown.*committed"):
    _setup(graph_randomness="hash")


def test_advertise_keys_carries_the_nonce_and_every_client_receives_all_of_them():
  x = np.random.default_rng(0).uniform(-1, 1, (20, 5)).astype(np.float32)
  drops = secagg.Dropouts(advertise_keys=[2])
  res = secagg.secure_sum(x, protocol="secagg+", seed=1, dropouts=drops, simulate="sum")
  setup, stats = res.setup, res.stats
  key_message = protocol.PUBLIC_KEY_MESSAGE_BYTES  # two X25519 keys and an id
  for u in setup.advertised:
    assert stats.bytes_sent["advertise_keys"][u] == key_message + 16
    assert stats.bytes_received["advertise_keys"][u] == (
        key_message * len(setup.neighbours(u)) + 16 * 19)
  plain = secagg.secure_sum(x, protocol="secagg", seed=1, dropouts=drops, simulate="sum")
  assert plain.setup.server.graph_nonces == {}  # the complete graph needs no randomness
  assert plain.stats.bytes_sent["advertise_keys"][0] == key_message
