"""Host crypto, Shamir sharing, graphs and quantisation guards."""

import itertools

import numpy as np
import pytest

from clipjax.secagg import graph, host_crypto, quantize, shamir


def test_agreement_is_symmetric_and_labelled():
  rng = host_crypto.Randomness()
  a_priv, a_pub = host_crypto.x25519_keypair(rng)
  b_priv, b_pub = host_crypto.x25519_keypair(rng)
  k_ab = host_crypto.agree(a_priv, b_pub, host_crypto.INFO_MASK)
  assert k_ab == host_crypto.agree(b_priv, a_pub, host_crypto.INFO_MASK)
  assert k_ab != host_crypto.agree(a_priv, b_pub, host_crypto.INFO_PEER)


def test_aead_detects_tampering_and_wrong_ad():
  rng = host_crypto.Randomness()
  key = rng.bytes(32)
  sealed = host_crypto.seal(key, b"secret", b"ad", rng)
  assert host_crypto.open_sealed(key, sealed, b"ad") == b"secret"
  bad = bytearray(sealed)
  bad[15] ^= 1
  with pytest.raises(ValueError, match="authentication failed"):
    host_crypto.open_sealed(key, bytes(bad), b"ad")
  with pytest.raises(ValueError, match="authentication failed"):
    host_crypto.open_sealed(key, sealed, b"other")


@pytest.mark.parametrize("t,holders", [(1, [0]), (2, [0, 3, 5]), (4, [1, 2, 3, 4, 5, 9])])
def test_shamir_any_t_shares_reconstruct(t, holders):
  rng = host_crypto.Randomness()
  secret = rng.bytes(32)
  shares = shamir.split(secret, t, holders, rng)
  for subset in itertools.combinations(holders, t):
    assert shamir.combine({h: shares[h] for h in subset}, t) == secret
  if t > 1:  # t - 1 shares are not enough (and give a different value).
    with pytest.raises(ValueError, match="need"):
      shamir.combine({h: shares[h] for h in holders[:t - 1]}, t)


@pytest.mark.parametrize("n,k", [(10, 4), (50, 12), (21, 6), (12, 5), (200, 16), (8, 7), (6, 1)])
def test_random_harary_graph(n, k):
  edges = graph.random_harary_graph(n, k, seed=0)
  assert np.all(edges[:, 0] < edges[:, 1])
  assert len({tuple(e) for e in edges.tolist()}) == len(edges) == n * k // 2
  np.testing.assert_array_equal(np.bincount(edges.ravel(), minlength=n), np.full(n, k))
  np.testing.assert_array_equal(edges, graph.random_harary_graph(n, k, seed=0))  # public seed
  if 1 < k < n - 1:  # the labels are random: another seed gives another graph
    assert not np.array_equal(edges, graph.random_harary_graph(n, k, seed=1))


def test_harary_graph_needs_even_degree_sum():
  with pytest.raises(ValueError, match="must be even"):
    graph.random_harary_graph(9, 3, seed=0)
  with pytest.raises(ValueError, match=r"degree=9 must be in \[1, 8\]"):
    graph.random_harary_graph(9, 9, seed=0)


def test_overflow_guard_names_n_b_and_safe_bits():
  assert quantize.max_safe_bits(2) == 24
  assert quantize.max_safe_bits(300) == 23
  with pytest.raises(ValueError, match=r"300 \* \(2\^24 - 1\).*largest safe bits is 23"):
    quantize.check_bits(300, 24)
  with pytest.raises(ValueError, match="bits=30"):
    quantize.check_bits(2, 30)
