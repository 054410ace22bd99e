"""The round's stages one by one, on hand-built inputs: the cohort, the reference scores, key
agreement and the straggler decision."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from clipjax import methods, secagg
from clipjax.clip import broadcast
from clipjax.clip import keep as keep_lib
from clipjax.clip import reports as reports_lib
from clipjax.round import algorithm, cohort, settings


# --- (1) the cohort ---------------------------------------------------------------------------

def test_choose_without_churn_is_the_sampled_cohort_and_no_away_count():
  for population, size in ((12, 12), (30, 7)):
    ids, away = cohort.choose(5, 3, population, size, 0.0)
    np.testing.assert_array_equal(ids, cohort.sample_cohort(5, 3, population, size))
    assert away is None


def test_choose_with_churn_drops_the_away_clients_and_counts_them():
  sampled = cohort.sample_cohort(5, 3, 30, 12)
  gone = cohort.away(5, 3, sampled, 0.5)
  assert 0 < gone.sum() < 12     # the draw below is a real split for this (seed, round)
  ids, away = cohort.choose(5, 3, 30, 12, 0.5)
  np.testing.assert_array_equal(ids, sampled[~gone])
  assert away == int(gone.sum()) and type(away) is int
  # Churn on, but this round nobody is away: the count is 0, not None.
  for r in range(50):
    ids, away = cohort.choose(0, r, 4, 4, 0.01)
    if len(ids) == 4:
      assert away == 0
      break
  else:
    pytest.fail("no round without an away client in 50 at rate 0.01")


# --- (4) the reference scores ------------------------------------------------------------------

def _scorer(p, r):
  return {"h": jnp.abs(p["w"] - r["w"])}


def _w(*v):
  return {"w": jnp.asarray(v, jnp.float32)}


def test_a_client_without_reference_scores_zeros_and_one_with_a_reference_scores_against_it():
  refs = cohort.References.empty(4)
  w0, w1, w2 = _w(1.0, 2.0, 3.0), _w(1.5, 2.0, 2.0), _w(0.0, 4.0, 3.25)
  # Version 0 goes to clients 0, 1, 2: nobody has received a model before.
  refs, scores, unreferenced = cohort.reference_scores(_scorer, w0, refs, np.array([0, 1, 2]), 0)
  np.testing.assert_array_equal(np.asarray(scores["h"]), np.zeros((3, 3)))
  assert unreferenced == 3
  # Version 1 goes to clients 0 and 3: client 0 scores w1 against w0, client 3 against itself.
  refs, scores, unreferenced = cohort.reference_scores(_scorer, w1, refs, np.array([0, 3]), 1)
  np.testing.assert_array_equal(np.asarray(scores["h"]), [[0.5, 0.0, 1.0], [0.0, 0.0, 0.0]])
  assert unreferenced == 1
  np.testing.assert_array_equal(refs.held, [1, 0, 0, 1])
  np.testing.assert_array_equal(refs.ref, [0, -1, -1, -1])
  # Version 2 to everybody: 0 and 3 against w1, 1 and 2 against w0 (the last model they saw).
  refs, scores, unreferenced = cohort.reference_scores(_scorer, w2, refs, np.arange(4), 2)
  np.testing.assert_array_equal(np.asarray(scores["h"]), [[1.5, 2.0, 1.25], [1.0, 2.0, 0.25],
                                                          [1.0, 2.0, 0.25], [1.5, 2.0, 1.25]])
  assert unreferenced == 0
  assert sorted(refs.models) == [0, 1, 2]


def test_a_server_sent_reference_gives_every_client_one_score_and_leaves_refs_alone():
  refs = cohort.References.empty(3)
  refs, _, _ = cohort.reference_scores(_scorer, _w(1.0, 2.0), refs, np.arange(3), 0)
  got_refs, scores, unreferenced = cohort.reference_scores(
      _scorer, _w(2.0, 0.5), refs, np.array([0, 2]), 1, prev_params=_w(1.0, 2.0))
  assert got_refs is refs and unreferenced == 0
  np.testing.assert_array_equal(np.asarray(scores["h"]), [[1.0, 1.5], [1.0, 1.5]])


# --- (2) key agreement -------------------------------------------------------------------------

def test_no_key_agreement_setting_agrees_no_keys():
  assert algorithm.agree_keys(None, 5, seed=0, round_index=0, inject_dropouts=True) is None


def test_key_agreement_is_for_the_cohort_and_its_public_choices_follow_seed_and_round():
  setting = settings.KeyAgreementSetting(
      kwargs=dict(protocol="secagg+", degree=4, threshold=3, allow_weak=True), dropout_rate=0.3)
  setup = algorithm.agree_keys(setting, 10, seed=7, round_index=2, inject_dropouts=False)
  assert setup.num_clients == 10 and setup.degree == 4 and setup.threshold == 3
  assert setup.round_index == 2 and setup.seed == 7 * 1_000_003 + 2
  assert setup.advertised == tuple(range(10))   # drop-outs are injected in SecAgg runs only
  assert all(not ids for ids in setup.dropouts.values())
  again = algorithm.agree_keys(setting, 10, seed=7, round_index=2, inject_dropouts=False)
  np.testing.assert_array_equal(again.edges, setup.edges)
  other = algorithm.agree_keys(setting, 10, seed=7, round_index=3, inject_dropouts=False)
  assert not np.array_equal(other.edges, setup.edges)
  # With drop-outs injected they too are a pure function of (seed, round).
  a = algorithm.agree_keys(setting, 10, seed=7, round_index=2, inject_dropouts=True)
  b = algorithm.agree_keys(setting, 10, seed=7, round_index=2, inject_dropouts=True)
  assert a.dropout_spec.rate == 0.3 and a.dropouts == b.dropouts and a.advertised == b.advertised
  assert sum(len(ids) for ids in a.dropouts.values()) > 0


def test_key_agreement_with_too_few_keys_aborts():
  setting = settings.KeyAgreementSetting(kwargs=dict(protocol="secagg", threshold=4,
                                                     allow_weak=True), dropout_rate=0.9)
  for r in range(20):  # some round loses a client at AdvertiseKeys, below t = 4 of 4
    try:
      algorithm.agree_keys(setting, 4, seed=0, round_index=r, inject_dropouts=True)
    except secagg.RoundAborted as e:
      assert e.stage == "advertise_keys" and len(e.participants) < 4
      return
  pytest.fail("no round aborted at AdvertiseKeys in 20 at drop-out rate 0.9")


# --- (3) the straggler decision ----------------------------------------------------------------

# A FLOP table with an interior-layer FLOP fraction p^2 on a 0.01 grid from 0.1: a straggler
# that may run rho of its FLOPs keeps the largest grid p with p^2 <= rho.
TABLE = keep_lib.make_flop_table(lambda p: p * p, p_min=0.1, resolution=0.01)
KEEP = settings.KeepSetting(straggler_fraction=0.2, table=TABLE, rho_min=None)
FLUID = methods.get_method("fluid")       # does not broadcast: the server sees every time
FIT = np.array([1.0, 1.0, 1.0, 1.0, 10.0])


def _decide(method, *, fit=FIT, net=np.zeros(5), reported=np.ones(5, bool), liars=None,
            reports=settings.ReportSetting(), setup=None, bounds=None):
  liars = np.zeros(5, bool) if liars is None else liars
  def no_bounds(relay):
    raise AssertionError("bounds are read by the plausible rule only")
  return broadcast.decide_stragglers(
      method, setup=setup, reported=reported, fit=fit, net=net, liars=liars,
      any_liars=bool(liars.any()), reports=reports, keep=KEEP, bounds=bounds or no_bounds)


def _nobody(decision, num=5):
  np.testing.assert_array_equal(decision.is_straggler, np.zeros(num, bool))
  np.testing.assert_array_equal(decision.keep, np.ones(num, np.float32))
  assert decision.keep.dtype == np.float32


def test_a_method_that_does_not_prune_has_no_stragglers():
  d = _decide(methods.get_method("fedavg"))
  _nobody(d)
  assert d.fields == {} and not d.broadcasting and d.relay_bytes == (0, 0)


def test_nobody_reported_nobody_decides():
  d = _decide(FLUID, reported=np.zeros(5, bool))
  _nobody(d)
  assert d.fields == {}


def test_the_clearly_slow_client_is_the_straggler_and_keeps_what_meets_the_quantile():
  d = _decide(FLUID)
  # By hand: every client ranks the five times {1, 1, 1, 1, 10}; the 0.8 quantile (type 7) sits
  # at position 0.8 * 4 = 3.2: T* = F* = 1 + 0.2 * (10 - 1) = 2.8. Only 10 > 2.8. The straggler
  # may run rho = F* / fit = 0.28 of its FLOPs: p = 0.52 (0.52^2 = 0.2704 <= 0.28 < 0.53^2).
  np.testing.assert_array_equal(d.is_straggler, [False, False, False, False, True])
  np.testing.assert_allclose(d.keep, [1, 1, 1, 1, 0.52], rtol=1e-6)
  assert list(d.fields) == ["stragglers", "keep_fraction", "stragglers_all_heard",
                            "pruning_all_heard"]
  assert d.fields["stragglers_all_heard"] == d.fields["pruning_all_heard"] == [4]
  assert d.fields["stragglers"] == [4]
  assert d.fields["keep_fraction"] == [1.0, 1.0, 1.0, 1.0, 0.52]
  assert not d.broadcasting and d.relay_bytes == (0, 0)


def test_the_network_rule_prunes_the_compute_a_slow_network_cannot_hide():
  network = dataclasses.replace(FLUID, name="network", keep_rule="clip_network")
  fit, net = np.array([1.0, 1.0, 1.0, 1.0, 4.0]), np.array([1.0, 1.0, 1.0, 1.0, 2.0])
  d = _decide(network, fit=fit, net=net)
  # T = {2, 2, 2, 2, 6}: T* = 2 + 0.2 * 4 = 2.8; rho = (T* - net) / fit = 0.8 / 4 = 0.2:
  # p = 0.44 (0.44^2 = 0.1936 <= 0.2 < 0.45^2 = 0.2025).
  assert d.fields["stragglers"] == [4]
  np.testing.assert_allclose(d.keep, [1, 1, 1, 1, 0.44], rtol=1e-6)
  # The compute rule gives the same client F* / fit = (1 + 0.2 * 3) / 4 = 0.4: p = 0.63.
  d = _decide(FLUID, fit=fit, net=net)
  np.testing.assert_allclose(d.keep, [1, 1, 1, 1, 0.63], rtol=1e-6)


def test_a_client_without_times_of_its_own_keeps_everything():
  reported = np.array([True, True, True, True, False])
  d = _decide(FLUID, reported=reported, fit=np.array([1.0, 1.0, 1.0, 1.0, 0.0]))
  _nobody(d)
  assert d.fields["stragglers"] == []


def test_a_liar_that_claims_to_be_slow_hides_the_real_straggler():
  liars = np.array([False, False, True, False, False])
  d = _decide(FLUID, liars=liars, reports=settings.ReportSetting(factor=10.0))
  # Client 2 reports 10 for its true 1. Client 4 then ranks {10; 1, 1, 10, 1}: T* at 3.2 is
  # 10 + 0.2 * 0 = 10, and 10 > 10 is false. The honest fast clients hear two 10s and also get
  # T* = 10; the liar decides on its own true time 1 against {1, 1, 1, 10}: T* = 2.8.
  assert list(d.fields) == ["liars", "stragglers", "keep_fraction", "stragglers_all_heard",
                            "pruning_all_heard"]
  assert d.fields["liars"] == [2]
  _nobody(d)
  # A factor of 1 is the truth: the slow client is found again.
  d = _decide(FLUID, liars=liars, reports=settings.ReportSetting(factor=1.0))
  assert d.fields["liars"] == [2] and d.fields["stragglers"] == [4]


def test_the_plausible_rule_ignores_reports_outside_the_bounds():
  calls = []
  def bounds(relay):
    calls.append(relay)
    return reports_lib.Bounds(fit_lo=0.5, fit_hi=5.0, net_lo=0.0, net_hi=1.0)
  d = _decide(FLUID, reports=settings.ReportSetting(rule="plausible"), bounds=bounds)
  assert calls == [(0, 0)]              # in the clear there is no relay
  # Client 4's report (fit 10 > 5) is dropped by the 4 others; they rank {1; 1, 1, 1}: T* = 1
  # and nobody of them is slower. Client 4 still ranks its own 10 with the 4 plausible 1s.
  assert list(d.fields) == ["implausible_reports", "stragglers", "keep_fraction",
                            "stragglers_all_heard", "pruning_all_heard"]
  assert d.fields["implausible_reports"] == 4
  assert d.fields["stragglers"] == [4]
  np.testing.assert_allclose(d.keep, [1, 1, 1, 1, 0.52], rtol=1e-6)
  # A client whose own report is implausible to nobody counts nothing.
  d = _decide(FLUID, fit=np.ones(5), reports=settings.ReportSetting(rule="plausible"),
              bounds=bounds)
  assert d.fields["implausible_reports"] == 0 and d.fields["stragglers"] == []


def test_broadcasting_methods_learn_the_times_through_the_sealed_relay():
  setup = secagg.setup_round(5, protocol="secagg", threshold=5, seed=1, allow_weak=True)
  d = _decide(methods.get_method("ordered"), setup=setup)
  assert d.fields["stragglers"] == [4]
  np.testing.assert_allclose(d.keep, [1, 1, 1, 1, 0.52], rtol=1e-6)
  # Each of 5 clients seals one report for each of its 4 peers: 12-byte nonce, the 16-byte
  # report, a 16-byte tag.
  assert d.broadcasting and d.fields["broadcast_bytes"] == 5 * 4 * 44
  sent, received = d.relay_bytes
  np.testing.assert_array_equal(sent, [4 * 44] * 5)
  np.testing.assert_array_equal(received, [4 * 44] * 5)
  assert list(d.fields) == ["broadcast_bytes", "stragglers", "keep_fraction",
                            "stragglers_all_heard", "pruning_all_heard"]


def test_under_secagg_plus_a_client_that_hears_few_reports_is_compared_with_every_report():
  """Ring of 6 (k = 2): client 5 (fit 10) hears clients 0 and 4. With client 4 also slow
  (fit 10), client 5 sees {10, 1, 10}: its 0.8 quantile (type 7, position 1.6) is
  10 - 0.4 * 9 = 6.4 < 10 ... so it still flags; client 4 hears 3 (fit 1) and 5 (10): {10, 1,
  10}, the same. With every report heard both see {1, 1, 1, 1, 10, 10}: position 4.0, T* = 10,
  and nobody's 10 exceeds it, so the all-heard rule flags nobody: the ring's clients flag two
  the global quantile would not."""
  setup = secagg.setup_round(6, protocol="secagg+", degree=2, threshold=2, seed=0,
                             allow_weak=True)
  fit = np.array([1.0, 1.0, 1.0, 1.0, 10.0, 10.0])
  heard = {u: setup.neighbours(u) for u in range(6)}
  d = broadcast.decide_stragglers(
      methods.get_method("clip_compute"), setup=setup, reported=np.ones(6, bool), fit=fit,
      net=np.zeros(6), liars=np.zeros(6, bool), any_liars=False,
      reports=settings.ReportSetting(), keep=KEEP, bounds=None)
  # Each client's own decision, by hand from the neighbours it hears (type-7 0.8 quantile).
  expect = [bool(fit[u] > np.quantile(np.r_[fit[u], fit[list(heard[u])]], 0.8))
            for u in range(6)]
  np.testing.assert_array_equal(d.is_straggler, expect)
  assert d.fields["stragglers_all_heard"] == []  # T* = quantile of all six = 10: nobody above
  assert d.fields["pruning_all_heard"] == []
