"""Issue 8 (secure aggregation hardening): one test per defect, each failing on the old code."""

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from clipjax import secagg
from clipjax.secagg import aggregate, blinding, chacha, graph, params, quantize


def _plain_sum(x, result, seed, bits=16, clip=1.0, weights=None, max_weight=None):
  n = x.shape[0]
  codes, _ = aggregate.weight_codes(weights, n, bits, max_weight)
  hi, lo = quantize.scale_pair(codes, clip)
  x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)  # dropped rows: any finite filler
  q = np.asarray(blinding.encode_inputs(
      jnp.asarray(x), jnp.asarray(hi), jnp.asarray(lo), jnp.asarray(codes),
      aggregate.noise_keys(jax.random.key(seed), n), clip=clip, bits=bits))
  return (q[result.survivors].astype(np.uint64).sum(axis=0) % 2**32).astype(np.uint32)


# 1. A non-finite update is a drop-out, reported and logged; never a silent wrong sum.
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_nonfinite_updates_are_dropped_reported_and_logged(protocol, caplog):
  n, dim = 12, 40
  x = np.random.default_rng(0).uniform(-0.5, 0.5, (n, dim)).astype(np.float32)
  x[3] = np.nan
  x[5, 7] = np.inf
  x[8, 0] = -np.inf
  threat = params.ThreatModel(dropout_fraction=0.4)  # they count as drop-outs: 4 of 12
  with caplog.at_level(logging.WARNING, logger="clipjax.secagg"):
    res = secagg.secure_sum(x, protocol=protocol, seed=3, threat=threat,
                            dropouts=secagg.Dropouts(masked_input=[1]))
  assert res.nonfinite == (3, 5, 8)
  assert res.dropped["masked_input"] == (1,)
  assert not res.survivors[[1, 3, 5, 8]].any() and res.survivors.sum() == n - 4
  assert "[3, 5, 8]" in caplog.text and "non-finite" in caplog.text
  np.testing.assert_array_equal(res.encoded_sum, _plain_sum(x, res, 3))
  assert np.all(np.isfinite(res.mean)) and res.weight_total == n - 4
  np.testing.assert_allclose(res.mean, x[res.survivors].mean(0), atol=2 * 2.0 / 65535)


def test_an_abort_reports_nonfinite_clients_and_charges_them():
  x = np.full((5, 8), np.nan, np.float32)
  x[0] = 0.1
  with pytest.raises(secagg.RoundAborted, match="masked_input: 1 clients survive") as err:
    secagg.secure_sum(x, seed=0)
  assert err.value.stage == "masked_input" and err.value.nonfinite == (1, 2, 3, 4)
  assert err.value.participants == (0, 1, 2, 3, 4)  # all trained; the clock charges them


# 3. Key material from the OS every call: same seed -> same sum, different transcript.
def test_same_seed_gives_identical_sums_and_fresh_keys():
  x = np.random.default_rng(1).uniform(-1, 1, (9, 33)).astype(np.float32)
  spec = secagg.Dropouts(share_keys=[2], masked_input=[4], unmasking=[6])
  threat = params.ThreatModel(dropout_fraction=0.34)
  a = secagg.secure_sum(x, seed=7, dropouts=spec, threat=threat)
  b = secagg.secure_sum(x, seed=7, dropouts=spec, threat=threat)
  np.testing.assert_array_equal(a.encoded_sum, b.encoded_sum)
  np.testing.assert_array_equal(a.total, b.total)
  np.testing.assert_array_equal(a.setup.edges, b.setup.edges)  # public choices follow the seed
  for u in a.setup.advertised:
    assert a.setup.server.public_keys[u][0] != b.setup.server.public_keys[u][0]
    assert a.setup.server.public_keys[u][1] != b.setup.server.public_keys[u][1]
  assert a.setup.server.share_ciphertexts.keys() == b.setup.server.share_ciphertexts.keys()
  assert all(a.setup.server.share_ciphertexts[k] != b.setup.server.share_ciphertexts[k]
             for k in a.setup.server.share_ciphertexts)
  assert (a.setup.server.masked_inputs != b.setup.server.masked_inputs).mean() > 0.99


def test_default_calls_never_reuse_masks():
  # +c and -c encode to 2^b - 1 and 0 whatever the rounding noise; with reused masks the
  # difference of the two masked vectors would be exactly 2^b - 1 everywhere.
  n, dim = 6, 64
  a = secagg.secure_sum(np.ones((n, dim), np.float32))
  b = secagg.secure_sum(-np.ones((n, dim), np.float32))
  diff = a.setup.server.masked_inputs - b.setup.server.masked_inputs  # uint32 wraps mod 2^32
  assert (diff[:, :dim] == 65535).mean() < 0.01
  assert a.setup.seed is None and b.setup.seed is None


# 4. (k, t) from Bell et al.'s analysis, with reported failure bounds and an explicit opt-in.
@pytest.mark.parametrize("n", [10, 20, 50, 200])
def test_chosen_parameters_meet_both_targets_and_are_minimal(n):
  p = secagg.choose_parameters(n)
  assert (p.protocol, p.source) == ("secagg+", "analysis")
  assert p.p_leak + p.p_split <= 2.0 ** -40 and p.p_abort <= 2.0 ** -20 and p.threshold >= 2
  assert p.secure and p.correct
  c, d = p.threat.counts(n)
  assert (c, d) == (n // 5, n // 10)
  for k in range(2, p.degree, 2):  # no smaller even degree works with any threshold
    for t in range(2, k + 2):
      leak, split, abort = params.failure_bounds(n, k, t, p.threat)
      assert leak + split > 2.0 ** -40 or abort > 2.0 ** -20, (k, t)
  # The leak bound is the exact hypergeometric tail, summed over honest clients (scipy check).
  tail = scipy.stats.hypergeom(n - 1, c, p.degree).sf(p.threshold - 1)
  assert p.p_leak == pytest.approx(min(1.0, (n - c) * tail), rel=1e-9, abs=1e-300)


def test_published_defaults_of_the_package_docstring():
  got = {n: (secagg.choose_parameters(n).degree, secagg.choose_parameters(n).threshold)
         for n in (10, 20, 50, 200)}
  assert got == {10: (4, 3), 20: (8, 5), 50: (16, 11), 200: (44, 29)}
  assert secagg.choose_parameters(10, protocol="secagg").threshold == 3  # > 2 colluders


def test_split_bound_holds_against_simulation():
  # Many removed clients on a sparse graph: the event is frequent enough to measure.
  n, k, removed = 30, 4, 12
  threat = params.ThreatModel(corruption_fraction=0.2, dropout_fraction=0.2)
  assert sum(threat.counts(n)) == removed
  _, bound, _ = params.failure_bounds(n, k, 3, threat)
  rng = np.random.default_rng(0)
  trials, split = 2000, 0
  for i in range(trials):
    nbrs = graph.neighbour_lists(n, graph.random_harary_graph(n, k, seed=i))
    kept = set(rng.permutation(n)[removed:].tolist())
    start = next(iter(kept))
    seen, todo = {start}, [start]
    while todo:
      for v in nbrs[todo.pop()]:
        if v in kept and v not in seen:
          seen.add(v)
          todo.append(v)
    split += seen != kept
  assert 0 < split / trials <= bound


def test_weak_parameters_are_rejected_unless_opted_in():
  n = 50
  k, t = graph.heuristic_degree_2log2n(n), graph.heuristic_threshold_majority(12)
  assert (k, t) == (12, 7)  # the old constants, under names that say what they are
  with pytest.raises(ValueError, match=r"degree=12, threshold=7 miss the security target.*"
                                       r"P\[leak\] <= 0.0316.*allow_weak_parameters"):
    secagg.setup_round(n, degree=k, threshold=t)
  setup = secagg.setup_round(n, degree=k, threshold=t, allow_weak=True, seed=0)
  assert setup.params.source == "weak (opted in)" and not setup.params.secure
  assert setup.params.p_leak == pytest.approx(0.0316, abs=1e-4)
  with pytest.raises(ValueError, match="threshold=1 lets any single share holder"):
    secagg.secure_sum(np.zeros((4, 3), np.float32), threshold=1)
  with pytest.raises(ValueError, match="no secagg\\+ parameters for num_clients=10 \\(threshold=2"):
    secagg.choose_parameters(10, threshold=2)  # 2 colluders could hold both shares


def test_setup_reports_its_failure_bounds():
  setup = secagg.setup_round(20, seed=1)
  p = setup.params
  assert (setup.degree, setup.threshold) == (p.degree, p.threshold) == (8, 5)
  assert "P[leak] <= 0" in p.describe() and "P[abort] <= 0" in p.describe()
  report = p.as_dict()
  assert report["max_corrupt"] == 4 and report["security_bits"] == 40
  explicit = secagg.setup_round(20, threshold=6, seed=1).params
  assert explicit.source == "explicit" and explicit.threshold == 6 and explicit.secure


# 5. The weight scale is a public max_weight, never the clients' private maximum.
def test_weights_need_a_public_max_weight_and_respect_it():
  x = np.full((4, 5), 0.5, np.float32)
  w = np.array([10.0, 20.0, 30.0, 40.0])
  with pytest.raises(ValueError, match="weights need max_weight"):
    secagg.secure_sum(x, w)
  with pytest.raises(ValueError, match=r"clients \[3\] have weights \[40.0\] above max_weight=35"):
    secagg.secure_sum(x, w, max_weight=35.0)
  res = secagg.secure_sum(x, w, max_weight=100.0, seed=0, bits=16)
  codes = np.rint(w / 100.0 * 65535).astype(np.uint32)  # scaled by W, not by max(w) = 40
  assert int(res.encoded_sum[-1]) == int(codes.sum())
  assert res.weight_total == pytest.approx(100.0, rel=1e-4)
  np.testing.assert_allclose(res.mean, 0.5, atol=3e-4)


# 6. Decoding in int64/float64, unbiased rounding at every b.
@pytest.mark.parametrize("bits", range(1, quantize.MAX_BITS + 1))
def test_stochastic_rounding_is_unbiased_at_every_bits(bits):
  levels = (1 << bits) - 1
  clip = 0.75
  draws = 20000
  rng = np.random.default_rng(bits)
  # Targets with a fractional part near the top, middle and bottom of the range, where float32
  # has fewest bits left for the fraction, for the full weight and a third of it.
  cases = []
  for code in (levels, max(1, levels // 3)):
    s = code / (2.0 * float(np.float32(clip)))
    for f in (-0.9, 0.1, 0.9):  # z = whole + 0.3 must stay inside [L/2 - code/2, L/2 + code/2]
      whole = math.floor(levels / 2.0 + f * code / 2.0)
      if abs(whole + 0.3 - levels / 2.0) > code / 2.0:
        continue
      y = np.float32((whole + 0.3 - levels / 2.0) / s)
      cases.append((code, y, (levels / 2.0) + float(y) * s))  # exact z of the float32 input
  codes = np.array([c for c, _, _ in cases], np.uint32)
  y = np.array([v for _, v, _ in cases], np.float32)
  z = np.array([v for _, _, v in cases])
  hi, lo = quantize.scale_pair(codes, clip)
  noise = rng.integers(0, 2**32, (draws, len(cases)), dtype=np.uint32)
  encode = jax.jit(quantize.encode, static_argnames=("clip", "bits"))
  q = np.asarray(encode(jnp.broadcast_to(jnp.asarray(y), noise.shape), jnp.asarray(noise),
                        jnp.asarray(hi), jnp.asarray(lo), clip=clip, bits=bits))
  assert q.min() >= 0 and q.max() <= levels
  frac = z - np.floor(z)
  assert np.all(np.isin(q - np.floor(z), [0, 1]))  # rounds to a neighbour of z only
  sd = np.sqrt(np.maximum(frac * (1 - frac), 1e-12) / draws)
  np.testing.assert_array_less(np.abs(q.mean(axis=0) - z), 5 * sd + 1e-6)


def test_decode_error_is_the_quantisation_step_at_n50():
  n, dim, bits = 50, 4000, quantize.max_safe_bits(50)
  assert bits == 24
  x = np.random.default_rng(2).uniform(-1, 1, (n, dim)).astype(np.float32)
  res = secagg.secure_sum(x, protocol="secagg", bits=bits, seed=5, keep_transcript_inputs=False)
  step = 2.0 / ((1 << bits) - 1)
  err = (res.total - x.astype(np.float64).sum(axis=0)) / step
  assert res.total.dtype == np.float64
  # n independent roundings, each with variance <= 1/4 step^2, and nothing else.
  assert np.sqrt(np.mean(err ** 2)) <= 1.1 * 0.5 * np.sqrt(n)
  assert abs(err.mean()) < 5 * 0.5 * np.sqrt(n / dim)
  levels = (1 << bits) - 1
  exact = (2 * res.encoded_sum[:dim].astype(np.int64) - n * levels) * (1.0 / levels)
  np.testing.assert_array_equal(res.total, exact)


# 7. Input validation: a clear ValueError naming the value and what is allowed.
@pytest.mark.parametrize("kwargs,match", [
    (dict(clip=float("inf")), r"clip=inf must be a positive finite number"),
    (dict(clip=float("nan")), r"clip=nan must be a positive finite number"),
    (dict(clip=0.0), r"clip=0.0 must be a positive finite number"),
    (dict(round_index=-1), r"round_index=-1 must be an integer in \[0, 2\^64\)"),
    (dict(round_index=2**64), r"round_index=18446744073709551616 must be"),
    (dict(dropouts=secagg.Dropouts(masked_input=[1.7])), r"client id 1.7: ids must be integers"),
    (dict(dropouts=secagg.Dropouts(unmasking=[9])), r"client id 9 outside \[0, 6\)"),
    (dict(bits=16.0), r"bits=16.0 must be an integer in \[1, 24\]"),
    (dict(seed=-3), r"seed=-3 must be a non-negative integer"),
    (dict(max_weight=5.0), r"max_weight=5.0 was given without weights"),
    (dict(budget_words=8), r"budget_words=8 must be an integer >= 16"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
  with pytest.raises(ValueError, match=match):
    secagg.secure_sum(np.zeros((6, 4), np.float32), **kwargs)


def test_arguments_that_conflict_with_a_setup_are_rejected():
  x = np.zeros((6, 4), np.float32)
  for kwargs in (dict(protocol="secagg"), dict(threshold=5), dict(degree=4), dict(seed=9),
                 dict(round_index=3), dict(dropouts=secagg.Dropouts(masked_input=[0])),
                 dict(threat=params.ThreatModel(0.0)), dict(allow_weak=True)):
    setup = secagg.setup_round(6, seed=1, round_index=2)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name}.*setup"):
      secagg.secure_sum(x, setup=setup, **kwargs)
  setup = secagg.setup_round(6, seed=1, round_index=2)  # the same values are fine
  secagg.secure_sum(x, setup=setup, seed=1, round_index=2, protocol="secagg+")


def test_weights_that_would_vanish_are_rejected():
  x = np.zeros((4, 3), np.float32)
  w = np.array([1.0, 100.0, 0.0, 40.0])
  with pytest.raises(ValueError, match=r"clients \[0\] have weights \[1.0\] that quantise to code "
                                       r"0 with max_weight=1000.0 at bits=8"):
    secagg.secure_sum(x, w, max_weight=1000.0, bits=8)
  res = secagg.secure_sum(x, w, max_weight=1000.0, bits=16, seed=0)  # fine at 16 bits
  assert res.survivors.all()


def test_oversized_vectors_and_keystream_counters_are_rejected():
  big = jax.ShapeDtypeStruct((2, 2**31), jnp.float32)  # no memory: the shape is checked first
  with pytest.raises(ValueError, match=r"D=2147483648 coordinates; allowed: 1 <= D <= 2\^30"):
    secagg.secure_sum(big)
  key = jnp.zeros((1, 8), jnp.uint32)
  nonce = jnp.zeros((1, 3), jnp.uint32)
  last = chacha.keystream(key, nonce, 2**32 - 1, 16)  # the last block is fine
  assert last.shape == (1, 16)
  with pytest.raises(ValueError, match=r"first_block=4294967295 with 2 blocks per stream would "
                                       r"take the 32-bit block counter past 2\^32 - 1"):
    chacha.keystream(key, nonce, 2**32 - 1, 32)
  with pytest.raises(ValueError, match=r"first_block=-1"):
    chacha.keystream(key, nonce, -1, 16)


# 8. SecAgg+: a client with fewer than t share holders is left out, with every client its
# removal leaves short (the fixed point of the holder condition); the round goes on while at
# least t remain. At n = 20, k = 4, t = 3 that is the client and at most one ring neighbour.
def test_client_with_too_few_holders_is_left_out_with_those_it_leaves_short():
  n, k, t, seed = 20, 4, 3, 3
  threat = params.ThreatModel(corruption_fraction=0.0)  # makes (4, 3) secure: no colluders
  probe = secagg.setup_round(n, degree=k, threshold=t, threat=threat, seed=seed)
  u = 0
  lost = probe.neighbours(u)[:3]  # u keeps 1 + 1 holders < t
  x = np.random.default_rng(4).uniform(-1, 1, (n, 10)).astype(np.float32)
  # Dropped at ShareKeys, after the graph is fixed (drop-outs at AdvertiseKeys would change
  # the committed graph itself: test_the_graph_is_fixed_by_what_the_advertised_clients_commit)
  res = secagg.secure_sum(x, degree=k, threshold=t, threat=threat, seed=seed,
                          dropouts=secagg.Dropouts(share_keys=list(lost)))
  assert u in res.too_few_holders and not res.survivors[u]
  assert len(res.too_few_holders) <= 2  # u, and at most one ring neighbour it left short
  assert res.dropped["share_keys"] == tuple(sorted(lost))
  np.testing.assert_array_equal(res.encoded_sum, _plain_sum(x, res, seed))
  assert res.survivors.sum() == n - 3 - len(res.too_few_holders)
  assert math.isclose(res.weight_total, res.survivors.sum())


def test_at_n50_one_short_client_takes_the_whole_ring_with_it():
  # Issue 24 item 6: with the analysed k = 16, t = 11 at n = 50, a client needs 10 of its 16
  # neighbours. 6 drop-outs among one client's neighbours at ShareKeys leave everyone
  # enough holders; 7 leave it short, its removal leaves its ring neighbours short, and the
  # removal runs around the ring: nobody can share, and the round aborts at ShareKeys.
  p = secagg.choose_parameters(50, protocol="secagg+")
  assert (p.degree, p.threshold) == (16, 11)
  x = np.random.default_rng(5).uniform(-1, 1, (50, 4)).astype(np.float32)
  for seed in (0, 1):
    probe = secagg.setup_round(50, degree=16, threshold=11, seed=seed)
    six = list(probe.neighbours(0)[:6])
    res = secagg.secure_sum(x, degree=16, threshold=11, seed=seed,
                            dropouts=secagg.Dropouts(share_keys=six))
    assert res.too_few_holders == () and res.survivors.sum() == 44
    np.testing.assert_array_equal(res.encoded_sum, _plain_sum(x, res, seed))
    seven = list(probe.neighbours(0)[:7])
    with pytest.raises(secagg.RoundAborted) as err:
      secagg.secure_sum(x, degree=16, threshold=11, seed=seed,
                        dropouts=secagg.Dropouts(share_keys=seven))
    assert err.value.stage == "share_keys" and len(err.value.too_few_holders) == 43


def test_threat_fractions_accept_numpy_scalars_and_refuse_the_rest():
  threat = params.ThreatModel(np.float32(0.2), np.float64(0.1))
  assert threat.counts(10) == params.ThreatModel(0.2, 0.1).counts(10)
  for bad in (True, "0.2", 1.0, -0.1, np.float32(1.5)):
    with pytest.raises(ValueError, match="corruption_fraction"):
      params.ThreatModel(bad, 0.1)
