"""SecAgg / SecAgg+ end to end: exact sums under drop-outs, aborts, privacy checks, API errors."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import secagg
from clipjax.secagg import aggregate, blinding, quantize


def _plain_sum(x, weights, result, seed, bits=16, clip=1.0, max_weight=None):
  """numpy mod 2^32 sum of the survivors' encoded (unblinded) inputs."""
  n = x.shape[0]
  codes, _ = aggregate.weight_codes(weights, n, bits, max_weight)
  hi, lo = quantize.scale_pair(codes, clip)
  q = np.asarray(blinding.encode_inputs(
      jnp.asarray(x), jnp.asarray(hi), jnp.asarray(lo), jnp.asarray(codes),
      aggregate.noise_keys(jax.random.key(seed), n), clip=clip, bits=bits))
  return (q[result.survivors].astype(np.uint64).sum(axis=0) % 2**32).astype(np.uint32)


def _drops(n):
  return secagg.Dropouts(advertise_keys=[n - 1] if n > 3 else [], share_keys=[0] if n > 4 else [],
                         masked_input=[1] if n > 2 else [], unmasking=[2] if n > 5 else [])


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize("n", [2, 3, 17, 50])
def test_exact_sum_with_dropouts_at_every_stage(protocol, n):
  rng = np.random.default_rng(n)
  x = rng.uniform(-0.9, 0.9, size=(n, 37)).astype(np.float32)
  w = rng.integers(1, 100, n).astype(np.float64)
  res = secagg.secure_sum(x, w, max_weight=100.0, protocol=protocol, dropouts=_drops(n), seed=n)
  np.testing.assert_array_equal(np.asarray(res.encoded_sum),
                                _plain_sum(x, w, res, n, max_weight=100.0))
  spec = _drops(n)
  for stage in secagg.STAGES:
    assert res.dropped[stage] == tuple(sorted(getattr(spec, stage)))
  s = res.survivors
  # Dropped clients after masking are excluded; unmasking drop-outs keep their input.
  assert not s[list(res.dropped["masked_input"])].any()
  assert s[list(res.dropped["unmasking"])].all()
  np.testing.assert_allclose(res.weight_total, w[s].sum(), rtol=1e-3)
  # Each coordinate: stochastic rounding error < one step per client (step of the public W).
  step = 2.0 / 65535 * 100.0
  assert np.abs(np.asarray(res.total) - (x[s] * w[s, None]).sum(0)).max() < s.sum() * step + 1e-3


def test_random_rate_and_unweighted_mean():
  x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(30, 20)).astype(np.float32)
  res = secagg.secure_sum(x, dropouts=secagg.Dropouts(rate=0.2), seed=5)
  assert 0 < len(np.flatnonzero(~res.survivors)) < 30
  np.testing.assert_array_equal(np.asarray(res.encoded_sum), _plain_sum(x, None, res, 5))
  assert res.weight_total == res.survivors.sum()
  np.testing.assert_allclose(res.mean, x[res.survivors].mean(0), atol=1e-4)


def test_abort_below_threshold():
  with pytest.raises(secagg.RoundAborted, match="masked_input.*threshold t=6"):
    secagg.secure_sum(np.zeros((10, 8), np.float32), protocol="secagg", threshold=6,
                      dropouts=secagg.Dropouts(masked_input=[0, 1, 2, 3, 4]))
  with pytest.raises(secagg.RoundAborted, match="advertise_keys"):
    secagg.setup_round(4, protocol="secagg", threshold=4,
                       dropouts=secagg.Dropouts(advertise_keys=[3]))


def test_bad_inputs_raise_value_error():
  x = np.zeros((4, 8), np.float32)
  with pytest.raises(ValueError, match="threshold=9"):
    secagg.secure_sum(x, protocol="secagg", threshold=9)
  with pytest.raises(ValueError, match="protocol='nope'"):
    secagg.secure_sum(x, protocol="nope")
  with pytest.raises(ValueError, match=r"shape \(3,\)"):
    secagg.secure_sum(x, np.ones(3), max_weight=1.0)
  with pytest.raises(ValueError, match="overflow.*largest safe bits"):
    secagg.secure_sum(np.zeros((600, 2), np.float32), bits=24)
  setup = secagg.setup_round(4, protocol="secagg")
  secagg.secure_sum(x, setup=setup)
  with pytest.raises(ValueError, match="already used"):
    secagg.secure_sum(x, setup=setup)


def test_masked_vector_uniform_and_uncorrelated_with_input():
  n, dim = 6, 20000
  x = np.zeros((n, dim), np.float32)
  x[0] = np.where(np.arange(dim) % 2 == 0, -1.0, 1.0)  # extreme, structured input
  res = secagg.secure_sum(x, protocol="secagg", seed=1)
  y = res.setup.server.masked_inputs[0, :dim]
  counts = np.bincount((y >> 28).astype(np.int64), minlength=16)  # top nibble
  chi2 = ((counts - dim / 16) ** 2 / (dim / 16)).sum()
  assert chi2 < 50.0  # 15 dof: p < 1e-5 under uniformity
  assert abs(np.corrcoef(y.astype(np.float64), x[0])[0, 1]) < 0.05


def test_transcript_holds_no_plaintext_input():
  n, dim = 5, 64
  x = np.random.default_rng(1).normal(size=(n, dim)).astype(np.float32) * 0.3
  res = secagg.secure_sum(x, protocol="secagg+", seed=2)
  srv = res.setup.server
  hi, lo = quantize.scale_pair(np.full(n, 65535), 1.0)
  q = np.asarray(blinding.encode_inputs(
      jnp.asarray(x), jnp.asarray(hi), jnp.asarray(lo), jnp.full((n,), 65535, jnp.uint32),
      aggregate.noise_keys(jax.random.key(2), n), clip=1.0, bits=16))
  blob = b"".join(srv.share_ciphertexts.values()) + srv.masked_inputs.tobytes()
  for u in range(n):
    assert x[u].tobytes()[:16] not in blob
    assert q[u, :8].tobytes() not in blob
    assert not np.any(srv.masked_inputs == q[u][None, :])  # no coordinate leaks either
  assert set(srv.public_keys) == set(range(n))


def test_peer_messages_through_server():
  setup = secagg.setup_round(20, protocol="secagg+", seed=3, round_index=7)
  u = 4
  v = setup.neighbours(u)[0]
  ct = secagg.seal_for_peer(setup, u, v, b"fit=1.5 net=0.3")
  assert b"fit" not in ct and setup.server.relayed[-1] == (u, v, ct)
  assert secagg.open_from_peer(setup, v, u, ct) == b"fit=1.5 net=0.3"
  assert setup.peer_key(u, v) == setup.peer_key(v, u)
  bad = bytearray(ct)
  bad[-1] ^= 0x80
  with pytest.raises(ValueError, match=f"from client {u} to client {v}"):
    secagg.open_from_peer(setup, v, u, bytes(bad))
  w = setup.neighbours(v)[-1] if setup.neighbours(v)[-1] != u else setup.neighbours(v)[0]
  with pytest.raises(ValueError):  # claims the wrong sender
    secagg.open_from_peer(setup, v, w, ct)
  non = next(x for x in range(20) if x != u and x not in setup.neighbours(u))
  with pytest.raises(ValueError, match="not neighbours"):
    secagg.seal_for_peer(setup, u, non, b"x")
  res = secagg.secure_sum(np.ones((20, 5), np.float32) * 0.25, setup=setup)
  np.testing.assert_allclose(res.mean, np.full(5, 0.25), atol=1e-4)


def test_tree_helper():
  tree = {"a": jnp.ones((3, 2, 2)) * 0.5, "b": jnp.zeros((3, 4))}
  mean, res = secagg.secure_sum_tree(tree, [1.0, 2.0, 3.0], max_weight=3.0, protocol="secagg")
  assert mean["a"].shape == (2, 2) and mean["b"].shape == (4,)
  np.testing.assert_allclose(mean["a"], 0.5, atol=1e-4)
  assert res.total.shape == (8,)


@hypothesis.settings(max_examples=6, deadline=None)
@hypothesis.given(n=st.integers(2, 12), dim=st.integers(1, 70), data=st.data())
def test_property_exact_for_any_shapes_graphs_and_drops(n, dim, data):
  protocol = data.draw(st.sampled_from(["secagg", "secagg+"]))
  k = n - 1 if protocol == "secagg" else data.draw(
      st.sampled_from([d for d in range(1, n) if (n * d) % 2 == 0]))
  t = data.draw(st.integers(1, k + 1))
  stage_of = data.draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
  spec = {s: [i for i in range(n) if stage_of[i] == j] for j, s in enumerate(secagg.STAGES)}
  x = np.random.default_rng(dim).uniform(-2, 2, size=(n, dim)).astype(np.float32)
  try:
    res = secagg.secure_sum(x, protocol=protocol, degree=k, threshold=t, allow_weak=True,
                            dropouts=secagg.Dropouts(**spec), seed=n + dim, budget_words=64)
  except secagg.RoundAborted:
    return
  np.testing.assert_array_equal(np.asarray(res.encoded_sum), _plain_sum(x, None, res, n + dim))


@pytest.mark.slow
def test_acceptance_n50_d1e6_secagg_plus_with_dropouts():
  n, dim = 50, 1_000_000
  x = np.random.default_rng(0).uniform(-0.2, 0.2, size=(n, dim)).astype(np.float32)
  w = np.random.default_rng(1).integers(10, 500, n).astype(np.float64)
  res = secagg.secure_sum(x, w, max_weight=500.0, protocol="secagg+",
                          dropouts=secagg.Dropouts(rate=0.1), seed=11, keep_transcript_inputs=False)
  assert 0 < (~res.survivors).sum() < n
  np.testing.assert_array_equal(np.asarray(res.encoded_sum),
                                _plain_sum(x, w, res, 11, max_weight=500.0))
