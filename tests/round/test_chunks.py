"""The cohort in chunks (`clipjax.round.chunks`): the layout by hand, and training chunk by chunk
equals training the cohort at once."""

import os
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clipjax import methods, multihost
from clipjax.fl import aggregation, local, training
from clipjax.fl import clients as clients_lib
from clipjax.round import chunks, settings
from tests.toy import H, LR, SPEC, apply_fn, init_params, make_data


def _unpack(layout):
  return [(rows.tolist(), padded.tolist()) for rows, padded in layout]


def test_layout_by_hand():
  rows = np.arange(7)
  # size 1: one row per chunk, nothing padded.
  assert _unpack(chunks.layout(rows, 1, 1)) == [([i], [i]) for i in range(7)]
  # size 3: the last chunk is padded with its own first row to the common length 3.
  assert _unpack(chunks.layout(rows, 3, 1)) == [
      ([0, 1, 2], [0, 1, 2]), ([3, 4, 5], [3, 4, 5]), ([6], [6, 6, 6])]
  # size 0 and any size >= the cohort: one chunk of everybody.
  for size in (0, 7, 50):
    assert _unpack(chunks.layout(rows, size, 1)) == [(list(range(7)), list(range(7)))]
  # multiple 2: size 3 becomes 4 (the next multiple of the devices sharded over).
  assert _unpack(chunks.layout(rows, 3, 2)) == [
      ([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5, 6], [4, 5, 6, 4])]
  # multiple 4 with one chunk of everybody: 7 rows become 8.
  assert _unpack(chunks.layout(rows, 0, 4)) == [(list(range(7)), list(range(7)) + [0])]
  # multiple 4, size 1: the chunk size itself rounds up to 4, so the slots hold real rows
  # before any padding (two rows: one chunk, padded with its first row).
  assert _unpack(chunks.layout(np.array([5, 9]), 1, 4)) == [([5, 9], [5, 9, 5, 5])]
  assert _unpack(chunks.layout(np.arange(6), 1, 4)) == [
      ([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5], [4, 5, 4, 4])]
  # rows are cohort positions, not necessarily from 0 (another process's slice).
  assert _unpack(chunks.layout(np.array([4, 5, 6]), 2, 1)) == [([4, 5], [4, 5]), ([6], [6, 6])]
  assert chunks.layout(np.array([], int), 3, 1) == []


@pytest.mark.parametrize("size,multiple", [(1, 1), (2, 1), (3, 1), (0, 1), (3, 2), (5, 4),
                                           (0, 4)])
def test_every_chunk_has_one_length_and_pads_with_its_first_row(size, multiple):
  rows = np.arange(10, 21)   # 11 rows
  layout = chunks.layout(rows, size, multiple)
  lengths = {len(padded) for _, padded in layout}
  assert len(lengths) == 1
  (length,) = lengths
  assert length % multiple == 0 and length >= min(size or 11, 11)
  np.testing.assert_array_equal(np.concatenate([r for r, _ in layout]), rows)
  for part, padded in layout:
    np.testing.assert_array_equal(padded[:len(part)], part)
    assert (padded[len(part):] == part[0]).all()


def test_process_layout_splits_the_cohort_into_each_processes_chunks():
  # One process: its chunks of all rows.
  got = chunks.process_layout(7, 3, None, multihost.SINGLE)
  assert [[r.tolist() for r in p] for p in got] == [[[0, 1, 2], [3, 4, 5], [6]]]
  # Two processes: rows 0-3 and 4-6 (linspace(0, 7, 3) rounds 3.5 to 4), each chunked alone.
  got = chunks.process_layout(7, 3, None, multihost.Processes(index=1, count=2))
  assert [[r.tolist() for r in p] for p in got] == [[[0, 1, 2], [3]], [[4, 5, 6]]]
  got = chunks.process_layout(5, 0, None, multihost.Processes(index=0, count=3))
  assert [[r.tolist() for r in p] for p in got] == [[[0, 1]], [[2]], [[3, 4]]]
  # A one-device mesh shards with multiple 1: the same layout as no mesh.
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("clients",))
  assert chunks.placement(mesh)[1] == 1 and chunks.placement(None)[1] == 1
  got = chunks.process_layout(7, 3, mesh, multihost.SINGLE)
  assert [[r.tolist() for r in p] for p in got] == [[[0, 1, 2], [3, 4, 5], [6]]]


def _pieces():
  """A clip_compute cohort of 5 of a population of 7: two stragglers, real scores."""
  counts = [6, 5, 4, 6, 3, 6, 5]
  x, y, valid = make_data(counts)
  params = init_params()
  train = training.make_trainer(apply_fn, lambda xc, yc, i: (xc[i], yc[i]), optax.sgd(LR),
                                local.LocalSpec(epochs=1, batch_size=6), loop="host",
                                client_batch=1)
  method = methods.get_method("clip_compute")
  pruned_round = methods.make_pruned_round(method, SPEC, train)
  data = settings.ClientData(x=np.asarray(x), y=np.asarray(y), valid=np.asarray(valid),
                             weights=np.asarray(counts, np.float32))
  ids = np.array([0, 2, 3, 5, 6])
  rng = np.random.default_rng(4)
  reference = jax.tree.map(lambda a: a * (1 + 0.3 * rng.normal(size=a.shape)).astype(np.float32),
                           params)
  one = methods.make_scorer(SPEC)(params, reference)
  scores = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(ids),) + a.shape), one)
  keep = np.array([1.0, 0.625, 1.0, 1.0, 0.5], np.float32)
  keys = clients_lib.client_keys(jax.random.key(3), jnp.int32(1), jnp.asarray(ids))
  return pruned_round, params, data, ids, scores, keep, keys


def _train(chunk):
  pruned_round, params, data, ids, scores, keep, keys = _pieces()
  aggregator = aggregation.make_aggregator("padded", params, None)
  acc = aggregator.begin(data.weights[ids], None, multihost.SINGLE,
                         chunks.process_layout(len(ids), chunk, None, multihost.SINGLE))
  trained = chunks.train_and_sum(
      pruned_round, acc, params=params, scores=scores,
      clip_state=methods.init_clip_state(SPEC, data.population), choice=None, keep=keep,
      keys=keys, ids=ids, data=data, chunk=chunk, mesh=None, processes=multihost.SINGLE,
      keep_deltas=True)
  return trained, acc.finish()


def test_training_in_chunks_of_1_2_or_all_gives_the_same_host_arrays():
  want, want_agg = _train(0)
  # What the cohort did, by hand: clients 2 and 6 (rows 1 and 4) keep ceil(8 p) units.
  np.testing.assert_array_equal(want.kept_units["hidden"], [H, 5, H, H, 4])
  np.testing.assert_array_equal(want.kept_params, [67, 5 * 8 + 3, 67, 67, 4 * 8 + 3])
  np.testing.assert_array_equal(want.num_seen, [6, 4, 6, 6, 5])
  assert len(want.deltas) == 1
  for chunk in (1, 2):
    got, got_agg = _train(chunk)
    assert len(got.deltas) == -(-5 // chunk)
    for key in ("kept_params", "num_seen", "invariant", "slack"):
      np.testing.assert_array_equal(getattr(got, key), getattr(want, key), err_msg=key)
    np.testing.assert_array_equal(got.kept_units["hidden"], want.kept_units["hidden"])
    # Each client is trained alone either way (the toy's host loop, client_batch=1): the same
    # program on the same numbers, so the losses agree to float32 rounding at most.
    np.testing.assert_allclose(got.loss_sum, want.loss_sum, rtol=1e-6)
    for g, w in zip(jax.tree.leaves(got.clip_state), jax.tree.leaves(want.clip_state)):
      np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    cat = jax.tree.map(lambda *a: np.concatenate(a), *got.deltas)
    for g, w in zip(jax.tree.leaves(cat), jax.tree.leaves(want.deltas[0])):
      np.testing.assert_allclose(g, np.asarray(w), rtol=1e-6, atol=1e-7)
    # The chunk sums add up to the one-shot mean (a different summation order: float rounding).
    for g, w in zip(jax.tree.leaves(got_agg.mean_delta), jax.tree.leaves(want_agg.mean_delta)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-7)
  # Clients outside the cohort keep their fresh invariance state; the stragglers have used it.
  state = want.clip_state
  np.testing.assert_array_equal(np.asarray(state.initialised), [0, 0, 1, 0, 0, 0, 1])
  np.testing.assert_array_equal(np.asarray(state.last_prune_mask["hidden"]).sum(1),
                                [H, H, 5, H, H, H, 4])


def test_the_auto_chunk_is_the_largest_that_fits_the_budget():
  per_client = chunks.client_bytes(1000, 500)                 # 10 copies x 4 bytes x D + data
  assert per_client == 10 * 4 * 1000 + 500
  assert chunks.auto_chunk(1000, per_client_bytes=100, budget_bytes=2550) == 25
  assert chunks.auto_chunk(10, per_client_bytes=100, budget_bytes=1e9) == 10   # the cohort
  assert chunks.auto_chunk(10, per_client_bytes=100, budget_bytes=1e9, multiple=4) == 12
  assert chunks.auto_chunk(1000, per_client_bytes=100, budget_bytes=2550, multiple=4) == 24
  assert chunks.auto_chunk(1000, per_client_bytes=100, budget_bytes=50, multiple=4) == 4
  smaller = chunks.auto_chunk(1000, per_client_bytes=100, budget_bytes=1000)
  assert smaller < chunks.auto_chunk(1000, per_client_bytes=100, budget_bytes=2550)
  with pytest.raises(ValueError, match="positive budget"):
    chunks.auto_chunk(10, per_client_bytes=100, budget_bytes=0)


def test_the_default_budget_is_a_fraction_of_host_memory_on_cpu():
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  assert chunks.default_budget_bytes("cpu") == pytest.approx(chunks.HOST_BUDGET_FRACTION * ram)
