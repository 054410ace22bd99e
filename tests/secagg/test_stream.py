"""SecureSumStream: a round's secure sum fed chunk by chunk equals the one-shot secure_sum.

How two secure sums are compared: keys come from the OS on every ``setup_round``, so two rounds
never share masks and their masked inputs differ. What a round reveals does not depend on the
keys: masks cancel exactly, so the unmasked field sum is the sum of the survivors' encoded
inputs, and those depend only on the public seed (graph, drop-outs, stochastic-rounding noise),
the updates and the weights. Hence two rounds with the same seed must agree bit for bit in
``encoded_sum`` and everything decoded from it, and in who survived (as
``test_same_seed_gives_identical_sums_and_fresh_keys`` relies on for the one-shot path). Each
chunked result is compared with (a) a one-shot ``secure_sum`` of the same seed and (b) the
exact numpy oracle: the mod 2^32 sum of ``blinding.encode_inputs`` over the survivors. Within one
round (one set of keys), the server's *masked* total is checked to be the same uint32 vector
however the senders are split into chunks.
"""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import secagg
from clipjax.secagg import aggregate, blinding, chunk_input, params, planes, quantize

DIM = 37
_encode_inputs = jax.jit(blinding.encode_inputs, static_argnames=("clip", "bits"))
N = 15  # chunks of 3 ids have one shape; chunks of 7 are 7, 7 and 1 (the shape of size 1)
THREAT = params.ThreatModel(dropout_fraction=0.4)  # (k, t) that survive the drop-outs below


def _oracle(x, survivors, seed, weights=None, max_weight=None, bits=16, clip=1.0):
  """Exact uint32 sum of the survivors' encoded (unblinded) inputs."""
  n = x.shape[0]
  codes, _ = aggregate.weight_codes(weights, n, bits, max_weight)
  hi, lo = quantize.scale_pair(codes, clip)
  x = np.where(np.isfinite(x), x, 0.0).astype(np.float32)  # left-out rows: any finite filler
  q = np.asarray(_encode_inputs(
      jnp.asarray(x), jnp.asarray(hi), jnp.asarray(lo), jnp.asarray(codes),
      aggregate.noise_keys(jax.random.key(seed), n), clip=clip, bits=bits))
  return (q[survivors].astype(np.uint64).sum(axis=0) % 2**32).astype(np.uint32)


def _inputs(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-0.9, 0.9, (n, DIM)).astype(np.float32)
  x[4, 3], x[9] = np.nan, np.inf  # non-finite rows: left out as drop-outs
  w = rng.integers(1, 100, n).astype(np.float64)
  drops = secagg.Dropouts(advertise_keys=[n - 1], share_keys=[0], masked_input=[1],
                          unmasking=[2], rate=0.15)  # and a few more drawn from the seed
  return x, w, drops


def _chunks(n, size, seed):
  order = np.random.default_rng(seed + 100).permutation(n)  # any split, not only slices
  return [order[i:i + size] for i in range(0, n, size)]


def _outcome(run):
  """The result of ``run()``, or the fields of the RoundAborted it raised."""
  try:
    return run()
  except secagg.RoundAborted as err:
    return ("aborted", err.stage, err.participants, err.nonfinite, err.too_few_holders)


def _assert_same_result(a, b):
  if isinstance(a, tuple) or isinstance(b, tuple):
    assert a == b
    return
  np.testing.assert_array_equal(a.encoded_sum, b.encoded_sum)
  np.testing.assert_array_equal(a.total, b.total)
  np.testing.assert_array_equal(a.mean, b.mean)
  assert a.weight_total == b.weight_total
  np.testing.assert_array_equal(a.survivors, b.survivors)
  assert (a.dropped, a.nonfinite, a.too_few_holders) == (b.dropped, b.nonfinite,
                                                         b.too_few_holders)
  for stage in secagg.STAGES:  # traffic depends only on the public choices
    np.testing.assert_array_equal(a.stats.bytes_sent[stage], b.stats.bytes_sent[stage])
    np.testing.assert_array_equal(a.stats.bytes_received[stage], b.stats.bytes_received[stage])
  assert a.stats.seconds.keys() == b.stats.seconds.keys()


def _streamed(x, w, drops, protocol, seed, size, shapes=None):
  """Chunked secure sum; adds the shape of each chunk of ``size`` ids to ``shapes`` if given."""
  setup = secagg.setup_round(len(x), protocol=protocol, dropouts=drops, seed=seed,
                             threat=THREAT)
  stream = secagg.SecureSumStream(setup, w, max_weight=100.0, dim=DIM)
  for ids in _chunks(len(x), size, seed):
    if shapes is not None and len(ids) == size:
      shapes.add(len(stream.client_keys(ids).edge_keys))
    stream.add(ids, x[ids])
  return stream.finish()


# Each compiled shape costs seconds on CPU: seeds, drop-outs and chunk sizes are chosen so that
# the tests of this file share them (one seed per protocol; the other tests reuse them).
@pytest.mark.parametrize("protocol,seed", [("secagg", 2), ("secagg+", 0)])
def test_chunked_sum_is_bit_identical_to_one_shot(protocol, seed):
  x, w, drops = _inputs(N, seed)
  one_shot = _outcome(lambda: secagg.secure_sum(x, w, max_weight=100.0, protocol=protocol,
                                                dropouts=drops, seed=seed, threat=THREAT))
  assert not isinstance(one_shot, tuple)  # these seeds survive; aborts are tested below
  assert one_shot.nonfinite and one_shot.too_few_holders == ()
  assert all(one_shot.dropped[stage] for stage in secagg.STAGES)
  assert one_shot.setup.server.masked_inputs.shape == (one_shot.survivors.sum(), DIM + 1)
  np.testing.assert_array_equal(one_shot.encoded_sum,
                                _oracle(x, one_shot.survivors, seed, w, 100.0))
  for size in (1, 3, 7, N):
    shapes, before = set(), chunk_input.add_blinds._cache_size()
    res = _outcome(lambda: _streamed(x, w, drops, protocol, seed, size, shapes))
    # Chunks of one length have one shape (edges padded to a public bound): one compile at
    # most per run (none for size N: the one-shot path is the stream with all C rows).
    assert len(shapes) == 1, shapes
    assert chunk_input.add_blinds._cache_size() - before <= (size != N)
    _assert_same_result(res, one_shot)
    assert res.setup.server.masked_inputs is None  # the stream keeps no masked inputs
    assert res.setup.server.masked_ids == tuple(np.flatnonzero(res.survivors))


def test_masked_total_is_the_same_for_any_split_and_partials_equal_add():
  n, seed = N, 0
  x, w, drops = _inputs(n, seed)
  setup = secagg.setup_round(n, protocol="secagg+", dropouts=drops, seed=seed, threat=THREAT)
  stream = secagg.SecureSumStream(setup, w, max_weight=100.0, dim=DIM)

  def partials(size, split_seed):
    out = []
    for ids in _chunks(n, size, split_seed):
      keys = pickle.loads(pickle.dumps(stream.client_keys(ids)))  # as another process would
      out.append(chunk_input.masked_partial(keys, x[ids], clip=1.0, bits=16))
    return out

  def masked_total(parts):
    return (sum(p[0].astype(np.uint64) for p in parts) % 2**32).astype(np.uint32)

  by_3, by_7, whole = partials(3, 0), partials(7, 1), partials(n, 2)
  np.testing.assert_array_equal(masked_total(by_3), masked_total(by_7))
  np.testing.assert_array_equal(masked_total(by_3), whole[0][0])
  senders = sorted(u for p in by_3 for u in p[1])
  assert senders == sorted(u for p in by_7 for u in p[1]) == list(whole[0][1])
  assert sorted(u for p in by_3 for u in p[2]) == list(whole[0][2]) == [4, 9]
  # The partial sums are masked: the total is not the plain sum of the senders' inputs.
  survivors = np.isin(np.arange(n), senders)
  assert (masked_total(by_3) != _oracle(x, survivors, seed, w, 100.0)).mean() > 0.9
  for part in by_3:
    stream.add_partial(*part)
  res = stream.finish()
  np.testing.assert_array_equal(res.encoded_sum, _oracle(x, res.survivors, seed, w, 100.0))
  _assert_same_result(res, _streamed(x, w, drops, "secagg+", seed, 3))


def test_too_few_senders_abort_at_finish_like_the_one_shot_path():
  n, seed = N, 2
  x = np.random.default_rng(0).uniform(-1, 1, (n, DIM)).astype(np.float32)
  x[7] = np.nan
  drops = secagg.Dropouts(share_keys=[9], masked_input=list(range(10, n)) + [0, 1, 2, 3])
  kwargs = dict(protocol="secagg", threshold=5, dropouts=drops, seed=seed)
  with pytest.raises(secagg.RoundAborted, match="masked_input: 4 clients survive"):
    secagg.secure_sum(x, **kwargs)
  expected = ("aborted", "masked_input", (4, 5, 6, 7, 8), (7,), ())
  assert _outcome(lambda: secagg.secure_sum(x, **kwargs)) == expected
  for size in (3, n):
    setup = secagg.setup_round(n, **kwargs)
    stream = secagg.SecureSumStream(setup, dim=DIM)
    for ids in _chunks(n, size, seed):
      stream.add(ids, x[ids])
    assert _outcome(stream.finish) == expected
    with pytest.raises(ValueError, match="finished"):  # the round is over
      stream.finish()


def test_errors_name_the_problem():
  n = N
  x = np.random.default_rng(1).uniform(-1, 1, (n, DIM)).astype(np.float32)
  setup = secagg.setup_round(n, protocol="secagg", seed=1,
                             dropouts=secagg.Dropouts(masked_input=[5, 6] + list(range(8, n))))
  stream = secagg.SecureSumStream(setup, dim=DIM)
  assert stream.clients == (0, 1, 2, 3, 4, 7)
  with pytest.raises(ValueError, match="already used"):
    secagg.SecureSumStream(setup, dim=DIM)
  stream.add([0, 1, 6], x[[0, 1, 6]])  # 6 dropped before masking: accepted, sends nothing
  with pytest.raises(ValueError, match=r"clients \[1\] were already added"):
    stream.add([2, 1], x[[2, 1]])
  with pytest.raises(ValueError, match=r"lists clients \[3\] more than once"):
    stream.add([3, 3], x[[3, 3]])
  with pytest.raises(ValueError, match=r"outside \[0, 15\)"):
    stream.client_keys([15])
  with pytest.raises(ValueError, match=r"updates has shape \(2, 36\); expected \(2, 37\)"):
    stream.add([2, 3], x[[2, 3], :36])
  with pytest.raises(ValueError, match=r"updates has shape \(1, 37\); expected \(2, 37\)"):
    stream.add([2, 3], x[[2]])
  with pytest.raises(ValueError, match=r"total is uint32\(36,\); expected uint32 \(38,\)"):
    stream.add_partial(np.zeros(36, np.uint32), [2])
  with pytest.raises(ValueError, match=r"total is int64\(38,\)"):
    stream.add_partial(np.zeros(38, np.int64), [2])
  with pytest.raises(ValueError, match=r"clients \[5\] cannot send this round"):
    stream.add_partial(np.zeros(38, np.uint32), [5])
  with pytest.raises(ValueError, match=r"clients \[2, 3, 4, 7\] were never added"):
    stream.finish()
  stream.add([2, 3, 4], x[[2, 3, 4]])  # the stream stays open after that error
  stream.add([7, 8, 9], x[7:10])
  stream.add(np.arange(10, n), x[10:])  # none of them sends: nothing runs on the device
  res = stream.finish()
  np.testing.assert_array_equal(res.encoded_sum, _oracle(x, res.survivors, 1))
  assert res.dropped["masked_input"] == (5, 6) + tuple(range(8, n))
  assert res.survivors.sum() == 6
  with pytest.raises(ValueError, match="finished"):
    stream.add([6], x[[6]])
  with pytest.raises(ValueError, match="finished"):
    stream.add_partial(np.zeros(38, np.uint32), [])
  with pytest.raises(ValueError, match=r"dim=0 coordinates; allowed: 1 <= D"):
    secagg.SecureSumStream(secagg.setup_round(n, protocol="secagg"), dim=0)
  with pytest.raises(ValueError, match="must be a RoundSetup"):
    secagg.SecureSumStream(None, dim=DIM)


@pytest.mark.parametrize("streams,length,budget", [
    (20, 437_151, blinding.DEFAULT_BUDGET_WORDS), (50, 219_707, blinding.DEFAULT_BUDGET_WORDS),
    (3, 38, 64), (3, 38, 1 << 20), (100, 5, 16), (7, 1_000, 2_048)])
def test_chunks_fit_the_budget_evenly(streams, length, budget):
  chunk = blinding.chunk_words_for(streams, length, budget)
  blocks, per_budget = -(-length // 16), max(1, budget // streams // 16)
  fewest = -(-blocks // per_budget)
  assert chunk % 16 == 0 and chunk <= 16 * per_budget
  assert -(-length // chunk) == fewest  # no more chunks than the budget needs
  assert fewest * chunk - length < 16 * fewest  # padding: under one block per chunk
  if (streams, length) == (20, 437_151):
    assert chunk == 218_576  # was 419,424: the second chunk 92% padding


def test_the_codes_do_not_depend_on_the_chunk_length():
  rng = np.random.default_rng(3)
  x = rng.normal(0.0, 0.4, (5, 1_000)).astype(np.float32)
  codes, _ = aggregate.weight_codes(rng.integers(1, 50, 5).astype(np.float64), 5, 16, 50.0)
  hi, lo = quantize.scale_pair(codes, 1.0)
  args = (jnp.asarray(x), jnp.ones(5, bool), jnp.asarray(hi), jnp.asarray(lo),
          jnp.asarray(codes), jnp.asarray(rng.integers(0, 2**32, (5, 8), dtype=np.uint32)))
  for plane in (None, planes.Plane("high", 6, 13), planes.Plane("low", 6, 11)):
    outs = [np.asarray(chunk_input.encoded_rows(*args, clip=1.0, bits=16, chunk_words=w,
                                                plane=plane))
            for w in (blinding.chunk_words_for(5, 1_001, 5 * 16 * b) for b in (7, 20, 63))]
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])
