"""P[abort] for injected drop-outs (`Dropouts(rate=...)`, Binomial(n, rate) clients) bounds what
the simulation does; the analysis' bound for at most floor(delta n) drop-outs does not."""

import math

import numpy as np
import pytest
import scipy.stats

from clipjax import secagg
from clipjax.secagg import params

THREAT = secagg.ThreatModel(corruption_fraction=0.2, dropout_fraction=0.1)


def test_the_bound_is_the_binomial_mixture_of_the_analysis_bound():
  p = secagg.choose_parameters(14, protocol="secagg+", threat=THREAT)
  c, _ = THREAT.counts(14)
  want = sum(scipy.stats.binom.pmf(d, 14, 0.1)
             * min(1.0, float(params._bounds(14, p.degree, p.threshold, c, d)[2]))
             for d in range(15))
  assert params.abort_bound_under_rate(p, 0.1) == pytest.approx(want, rel=1e-9)
  assert params.abort_bound_under_rate(p, 0.0) == pytest.approx(
      float(params._bounds(14, p.degree, p.threshold, c, 0)[2]))
  # Every drop-out count that leaves fewer than t clients aborts surely: the bound includes them.
  tail = scipy.stats.binom.sf(14 - p.threshold, 14, 0.1)
  assert params.abort_bound_under_rate(p, 0.1) >= tail
  with pytest.raises(ValueError, match="rate=1.0 must be a number in"):
    params.abort_bound_under_rate(p, 1.0)


def test_simulated_abort_frequency_at_n50_is_within_the_bound_and_above_the_analysis():
  """n = 50, SecAgg+ (k, t) analysed for <= 5 drop-outs, 10% injected: D > 5 in 38% of rounds."""
  n, rate, rounds = 50, 0.1, 600
  p = secagg.choose_parameters(n, protocol="secagg+", threat=THREAT)
  x = np.zeros((n, 4), np.float32)
  aborted = 0
  for seed in range(rounds):
    try:
      secagg.secure_sum(x, dropouts=secagg.Dropouts(rate=rate), seed=seed, simulate="sum",
                        threat=THREAT)
    except secagg.RoundAborted:
      aborted += 1
  assert scipy.stats.binom.sf(5, n, rate) > 0.35
  assert p.p_abort < 1.0 / rounds          # the analysis: (almost) never
  assert aborted >= 1                       # ... yet rounds abort
  bound = params.abort_bound_under_rate(p, rate)
  # Observed frequency within the bound, up to 3 binomial standard deviations of the estimate.
  assert aborted / rounds <= bound + 3 * math.sqrt(bound * (1 - bound) / rounds)
