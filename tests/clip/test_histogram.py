"""The secure time histogram: bins, counts and the quantile read from them."""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from clipjax.clip import histogram


def test_edges_are_log_spaced_and_bad_ranges_are_refused():
  e = histogram.edges(4, 1.0, 16.0)
  np.testing.assert_allclose(e, [1, 2, 4, 8, 16])
  for bins, lo, hi in ((1, 1.0, 2.0), (4, 0.0, 2.0), (4, 3.0, 2.0), (4, 1.0, np.inf)):
    with pytest.raises(ValueError, match="histogram"):
      histogram.edges(bins, lo, hi)


def test_counts_put_out_of_range_times_in_the_end_bins():
  e = histogram.edges(4, 1.0, 16.0)
  # 0.5 below the range -> bin 0; 1 and 1.9 -> 0; 2 -> 1; 15.9 -> 3; 16 and 100 -> 3.
  np.testing.assert_array_equal(histogram.counts([0.5, 1.0, 1.9, 2.0, 15.9, 16.0, 100.0], e),
                                [3, 1, 0, 3])


def test_quantile_by_hand():
  e = histogram.edges(4, 1.0, 16.0)
  # Bin [1, 2) holds 2 values at the log-midpoints of its halves: 2^0.25, 2^0.75; bin [8, 16)
  # one at 8 * 2^0.5. q = 0.5 of 3 values: position 1 -> 2^0.75.
  assert histogram.quantile([2, 0, 0, 1], e, 0.5) == pytest.approx(2 ** 0.75)
  # q = 0.75: position 1.5 -> 2^0.75 + 0.5 (8 sqrt 2 - 2^0.75).
  assert histogram.quantile([2, 0, 0, 1], e, 0.75) == pytest.approx(
      2 ** 0.75 + 0.5 * (8 * 2 ** 0.5 - 2 ** 0.75))
  assert np.isnan(histogram.quantile([0, 0, 0, 0], e, 0.8))
  with pytest.raises(ValueError, match="4 non-negative"):
    histogram.quantile([1, 2, 3], e, 0.5)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(times=st.lists(st.floats(0.02, 5000.0), min_size=1, max_size=60),
                  q=st.sampled_from([0.5, 0.8, 0.9, 1.0, 0.0]))
def test_the_histogram_quantile_is_within_the_bins_of_the_exact_one(times, q):
  """The exact type-7 quantile interpolates order statistics x_lo <= x_hi; the estimate lies
  between the lower edge of x_lo's bin and the upper edge of x_hi's, so within one bin of the
  exact quantile when they share a bin."""
  e = histogram.edges()
  ordered = np.sort(times)
  exact = float(np.quantile(ordered, q))
  est = histogram.quantile(histogram.counts(ordered, e), e, q)
  h = q * (len(ordered) - 1)
  lo_bin = histogram.bin_of(ordered[int(np.floor(h))], e)
  hi_bin = histogram.bin_of(ordered[min(int(np.floor(h)) + 1, len(ordered) - 1)], e)
  assert e[lo_bin] * (1 - 1e-9) <= est <= e[hi_bin + 1] * (1 + 1e-9)
  assert e[lo_bin] * (1 - 1e-9) <= exact <= e[hi_bin + 1] * (1 + 1e-9)
  if lo_bin == hi_bin:  # one bin: the estimate is within one bin width (a ratio) of exact
    width = e[1] / e[0]
    assert 1 / width <= est / exact <= width


def test_the_stars_separate_slow_from_fast_clients():
  """16 fast clients (fit 1 s, net 0.5 s) and 4 slow ones (fit 1.5 s): the 0.8 quantile of
  the totals sits between the groups, so exactly the 4 slow totals exceed T*."""
  fit = np.r_[np.full(16, 1.0), np.full(4, 1.5)]
  net = np.full(20, 0.5)
  agg = histogram.TimeHistograms.of(fit, net, histogram.edges())
  assert agg.clients == 20
  t_star, f_star = agg.stars(0.2)
  assert np.sum(fit + net > t_star) == 4
  assert 1.0 < f_star < 1.5
  assert histogram.words(64) == 128


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(times=st.lists(st.floats(0.02, 5000.0), min_size=2, max_size=60),
                  f=st.sampled_from([0.1, 0.2, 0.5]))
def test_a_client_the_histogram_flags_is_flagged_by_the_exact_quantile(times, f):
  """Precision 1 against every report heard: flagged (bin above x_floor(h)'s) implies above the
  exact type-7 quantile; and a client two bins or more above x_ceil(h)'s is always flagged."""
  e = histogram.edges()
  t = np.asarray(times)
  agg = histogram.TimeHistograms.of(t, np.zeros_like(t), e)
  flags = agg.flags(t, np.zeros_like(t), f)
  exact = np.quantile(t, 1 - f)
  assert np.all(t[flags] >= exact * (1 - 1e-12))
  ordered = np.sort(t)
  h = (1 - f) * (len(t) - 1)
  upper = ordered[min(int(np.floor(h)) + 1, len(t) - 1)]
  assert np.all(flags[histogram.bin_of(t, e) > histogram.bin_of(upper, e)])
  assert histogram.TimeHistograms.of([], [], e).straggler_bin(0.2) == -1


def test_flags_by_hand_with_a_shared_bin():
  """Bins [1, 2), [2, 4), [4, 8), [8, 16). Totals 1.1, 1.2, 1.3, 3, 9 (n = 5, f = 0.2):
  h = 3.2, x_3 = 3 in bin 1: only 9 (bin 3) is flagged; the exact T* = 3 + 0.2 * 6 = 4.2 flags
  the same client. With totals 1.1, 1.2, 1.3, 1.5, 1.9 all share bin 0: nobody."""
  e = histogram.edges(4, 1.0, 16.0)
  t = np.array([1.1, 1.2, 1.3, 3.0, 9.0])
  agg = histogram.TimeHistograms.of(t, np.zeros(5), e)
  assert agg.straggler_bin(0.2) == 1
  np.testing.assert_array_equal(agg.flags(t, np.zeros(5), 0.2), [0, 0, 0, 0, 1])
  same = np.array([1.1, 1.2, 1.3, 1.5, 1.9])
  agg = histogram.TimeHistograms.of(same, np.zeros(5), e)
  assert not agg.flags(same, np.zeros(5), 0.2).any()
