"""Populations and cohorts (DESIGN 2.9): cohort draws, what clients keep, chunked rounds."""

import jax
import numpy as np
import pytest

from clipjax.round import settings
from clipjax.round import cohort
from clipjax.clock import devices
from tests.toy import make_setting, run_rounds


def test_cohort_is_a_pure_function_of_seed_and_round():
  a = cohort.sample_cohort(3, 7, 300, 20)
  np.testing.assert_array_equal(a, cohort.sample_cohort(3, 7, 300, 20))
  assert len(set(a.tolist())) == 20 and np.all(np.diff(a) > 0) and a.max() < 300
  others = [cohort.sample_cohort(3, r, 300, 20) for r in range(8, 12)]
  assert all(not np.array_equal(a, b) for b in others)
  assert not np.array_equal(a, cohort.sample_cohort(4, 7, 300, 20))
  np.testing.assert_array_equal(cohort.sample_cohort(3, 7, 12, 12), np.arange(12))
  with pytest.raises(ValueError, match="cohort_size=13 must be in"):
    cohort.sample_cohort(0, 0, 12, 13)


def test_every_client_is_drawn_about_equally_often():
  counts = np.zeros(50)
  for r in range(400):
    counts[cohort.sample_cohort(0, r, 50, 10)] += 1
  # 400 draws of 10 of 50: each client expects 80 (binomial sd ~8).
  assert counts.min() > 50 and counts.max() < 110


def test_references_follow_the_last_different_model_each_client_received():
  refs = cohort.References.empty(4)
  model = lambda v: np.full(3, float(v), np.float32)  # noqa: E731
  refs = refs.download(np.array([0, 1, 2, 3]), 0, model(0))   # round 1: everyone gets w0
  np.testing.assert_array_equal(refs.ref, [-1, -1, -1, -1])
  refs = refs.download(np.array([0, 1]), 1, model(1))         # round 2: clients 0, 1 get w1
  np.testing.assert_array_equal(refs.held, [1, 1, 0, 0])
  np.testing.assert_array_equal(refs.ref, [0, 0, -1, -1])
  refs = refs.download(np.array([0, 1]), 1, model(1))         # an aborted round: w1 again
  np.testing.assert_array_equal(refs.ref, [0, 0, -1, -1])
  refs = refs.download(np.array([1, 2]), 3, model(3))         # client 2 missed w1 and w2
  np.testing.assert_array_equal(refs.held, [1, 3, 3, 0])
  np.testing.assert_array_equal(refs.ref, [0, 1, 0, -1])      # 2 compares w3 with w0
  assert sorted(refs.models) == [0, 1, 3]
  np.testing.assert_array_equal(refs.models[3], model(3))
  refs = refs.download(np.array([0, 2, 3]), 4, model(4))
  refs = refs.download(np.array([0, 1, 2, 3]), 5, model(5))
  np.testing.assert_array_equal(refs.ref, [4, 3, 4, 4])
  assert sorted(refs.models) == [3, 4, 5]                     # w0 and w1: nobody's any more


def test_reports_hold_only_what_a_client_measured():
  rep = cohort.Reports.empty(5)
  assert not rep.known(np.arange(5)).any()
  rep = rep.update(np.array([1, 3]), np.array([2.0, 4.0]), np.array([0.5, 0.25]))
  np.testing.assert_array_equal(rep.known(np.arange(5)), [False, True, False, True, False])
  assert rep.fit_full[3] == 4.0 and rep.net[1] == 0.5




@pytest.mark.parametrize("method", ["fedavg", "clip_compute"])
def test_a_chunked_round_equals_the_one_chunk_round(method):
  counts = [5, 3, 6, 4, 6, 2, 5]
  base, params, _, _ = make_setting(method, counts)
  chunked = make_setting(method, counts, chunk=3)[0]
  want, want_rows = run_rounds(base, params, 3)
  got, got_rows = run_rounds(chunked, params, 3)
  for g, w in zip(jax.tree.leaves(got.server.params), jax.tree.leaves(want.server.params)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
  for g, w in zip(got_rows, want_rows):
    for key in ("keep_fraction", "stragglers", "invariant_units", "slack_units", "messages"):
      assert g[key] == w[key], key
    assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-6)
    assert g["round_time_s"] == pytest.approx(w["round_time_s"], rel=1e-9)
  # Thresholds are scores of models that differ in summation order only: equal to float
  # rounding (the counts they select are compared exactly above).
  for g, w in zip(jax.tree.leaves(got.clip), jax.tree.leaves(want.clip)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-7)


def test_a_secure_chunked_round_sums_exactly_what_one_chunk_sums():
  counts = [4, 6, 5, 3, 6]
  one, params, _, _ = make_setting("fedavg", counts, secure=True, compute_slow=0)
  two = make_setting("fedavg", counts, secure=True, compute_slow=0, chunk=2)[0]
  # Keys differ between the runs (fresh per setup), but the masks cancel and the rounding
  # noise comes from the round's seed: the unmasked sums, so the new models, are identical.
  want, (row_one,) = run_rounds(one, params, 1)
  got, (row_two,) = run_rounds(two, params, 1)
  assert row_one["secagg_survivors"] == row_two["secagg_survivors"] == 5
  for g, w in zip(jax.tree.leaves(got.server.params), jax.tree.leaves(want.server.params)):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_a_cohort_round_touches_only_its_clients():
  counts = [5, 3, 6, 4, 6, 2, 5, 4]
  algo, params, _, _ = make_setting("clip_compute", counts, cohort=3)
  state, rows = run_rounds(algo, params, 4)
  seen = set()
  for r, row in enumerate(rows):
    ids = cohort.sample_cohort(0, r, len(counts), 3)
    assert row["cohort"] == ids.tolist() and len(row["client_time_s"]) == 3
    assert row["unreported_clients"] == int(sum(c not in seen for c in ids))
    assert all(ids[s] in seen for s in row["stragglers"])  # only clients with times decide
    seen |= set(ids.tolist())
  assert np.isfinite(state.reports.fit_full[sorted(seen)]).all()
  assert np.isnan(np.delete(state.reports.fit_full, sorted(seen))).all()


def test_away_clients_take_no_part_and_a_round_without_clients_keeps_the_model():
  counts = [5, 3, 6, 4, 6, 2, 5, 4]
  algo, params, _, _ = make_setting("fedavg", counts, unavailable_rate=0.4)
  state, rows = run_rounds(algo, params, 3)
  for r, row in enumerate(rows):
    away = cohort.away(0, r, np.arange(8), 0.4)
    assert row["away"] == int(away.sum()) > 0
    assert row["cohort"] == np.flatnonzero(~away).tolist()
    assert len(row["client_time_s"]) == len(row["survivors"]) == int((~away).sum())
  # A client's availability is its own draw: it does not depend on who else was sampled.
  np.testing.assert_array_equal(cohort.away(0, 1, np.array([2, 5]), 0.4),
                                cohort.away(0, 1, np.arange(8), 0.4)[[2, 5]])
  nobody, params, _, _ = make_setting("fedavg", counts, unavailable_rate=0.999)
  state, (row,) = run_rounds(nobody, params, 1)
  assert row["away"] == 8 and row["skipped"] and row["round_time_s"] == 0.125
  # With keys to agree (clip_compute broadcasts), a round needs at least 2 clients.
  few, _, _, _ = make_setting("clip_compute", counts[:3], unavailable_rate=0.3)
  _, rows = run_rounds(few, params, 4)
  left = [int((~cohort.away(0, r, np.arange(3), 0.3)).sum()) for r in range(4)]
  assert left == [3, 1, 2, 3]  # make_setting fixes t = 3 for its keys: rounds 2 and 3 skip
  assert ["skipped" in row for row in rows] == [False, True, True, False]
  for g, w in zip(jax.tree.leaves(state.server.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_server_sent_reference_equals_last_seen_under_full_participation_and_costs_a_download():
  counts = [5, 3, 6, 4, 6]
  last, params, _, _ = make_setting("clip_compute", counts)
  sent = make_setting("clip_compute", counts, reference="server")[0]
  (_, want), (_, got) = run_rounds(last, params, 3), run_rounds(sent, params, 3)
  num_params = sum(int(np.size(a)) for a in jax.tree.leaves(params))
  downlink = devices.Tiers().network["5g"].downlink_bps
  for r, (a, b) in enumerate(zip(want, got)):
    for key in ("stragglers", "keep_fraction", "invariant_units", "slack_units", "train_loss"):
      assert a[key] == b[key], key
    extra = np.asarray(b["download_s"]) - np.asarray(a["download_s"])
    # w(t-1) is sent from round 2 on; metrics.jsonl rounds times to 1e-9 s, so a difference
    # of two is exact to 1e-9 s
    sent = 8.0 * 4 * num_params / downlink if r > 0 else 0.0
    np.testing.assert_allclose(extra, sent, rtol=0, atol=1.01e-9)


def test_lying_clients_reports_are_scaled_and_the_plausible_rule_drops_them():
  counts = [5, 3, 6, 4, 6]
  liars = np.array([False, True, False, False, False])
  tiers = devices.Tiers(compute={"fast": 1e5, "slow": 5e4})
  setting = settings.ReportSetting(liars=liars, factor=10.0, rule="plausible", tiers=tiers,
                                    max_examples=6, jitter_sigma=0.0, sigmas=4.0)
  algo, params, _, _ = make_setting("clip_compute", counts, reports=setting)
  _, rows = run_rounds(algo, params, 3)
  assert "implausible_reports" not in rows[0]          # round 1: nobody has times to report
  for row in rows[1:]:
    assert row["liars"] == [1]
    assert row["implausible_reports"] == 4             # client 1's report, heard by the other 4
  honest = settings.ReportSetting(liars=liars, factor=1.0, rule="plausible", tiers=tiers,
                                   max_examples=6, jitter_sigma=0.0, sigmas=4.0)
  _, rows = run_rounds(make_setting("clip_compute", counts, reports=honest)[0], params, 3)
  assert all(row["implausible_reports"] == 0 for row in rows[1:])  # honest reports all pass
