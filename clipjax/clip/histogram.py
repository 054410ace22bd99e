"""Stragglers that know the global quantile: a histogram of times summed under SecAgg (issue 27).

Under SecAgg+ a client hears the time reports of its k graph neighbours only (DESIGN 2.2), and
the quantile of so small a sample often misses that it is slow. With
`clip.straggler_info=histogram` every client instead appends two one-hot rows to the vector it
already uploads through SecAgg: the bin of its total time (fit + network) and the bin of its
full-model fit time, over public log-spaced bins. The secure sum gives the server the two
aggregate histograms (exact integer counts: SecAgg's sum is exact mod 2^32), which it sends
with the next global model; every client reads T* and F* from them and decides with them. No
extra message; the decision lags one round, as the reports' does. A round SecAgg aborts
delivers no histogram: in the next round nobody prunes.

The decision at the histogram's resolution: with sorted totals x_0..x_{n-1} and h = q (n - 1),
the exact T* lies between x_floor(h) and the next order statistic. A client is a straggler iff
its total falls in a bin above x_floor(h)'s: its time then exceeds x_floor(h), so it is at least
the next order statistic and at least T*: every client flagged this way is one the exact
quantile flags too (precision 1 against every report heard, ties aside). A slow client in the
same bin as x_floor(h) is missed, so the bins must resolve the gap between fast and slow
totals: the default 256 bins over 0.01-10,000 s are 5.5% wide (64 bins, 24% wide, missed all 4
slow clients in 1 of 15 CIFAR-10 rounds in `configs/studies/straggler_info.py`, where pruning
had brought their totals within a bin of the fast ones); `clip.histogram_lo_s` and
`clip.histogram_hi_s` can narrow the range to the run's round times (public: the device tiers
and the model fix it). Keep fractions use F*, the interpolated quantile of the fits.

Privacy (what the server learns): the number of last round's surviving clients in each time
bin, i.e. the distribution of their times at the bins' resolution, and nothing that SecAgg
does not already reveal about which client is where: the histogram is part of the masked
input, so the server sees only the sum over at least t clients. It does see each client's
upload arrive, so it already knows the order of the clients' round times; the histogram adds
their spread in seconds, not who is slow. The usual SecAgg caveat holds unchanged: a server
that can make the survivor sets of two rounds differ by one client learns that client's bin
from the difference (as it would learn its update), which the threat model excludes.

The quantile: the counts are expanded into a sample in which the j-th of bin b's c values sits
at the log-midpoint of the j-th of c equal log-slices of the bin; the type-7 quantile of that
sample (`stragglers.masked_quantile`'s rule) lies in the bins of the true order statistics it
interpolates, so it is within one bin of the exact quantile whenever those two share a bin
(the tests check the general bracket too). Times below the first edge count in the first bin,
above the last in the last.

The simulation adds the histograms from the survivors' recorded times instead of appending
them to the masked vector: SecAgg's sum of exact words is the plain sum over the survivors
(the property `secagg.simulate=sum` rests on, verified bit for bit in `tests/secagg`), and the
clock charges the 2 x bins words both ways and their masks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

STRAGGLER_INFOS = ("auto", "neighbours", "histogram")
DEFAULT_BINS = 256
DEFAULT_RANGE = (0.01, 10_000.0)  # seconds: 5.5% wide bins at 256; wider rounds clip to the ends


def resolve(straggler_info: str, *, broadcasts: bool, secagg: bool, rule: str) -> str:
  """The `clip.straggler_info` a run uses: `auto` (the default) is `histogram` for a method
  whose clients decide from their peers' times, under SecAgg (either protocol) and the
  `quantile` rule, and `neighbours` otherwise (no SecAgg sum to carry a histogram, or the
  `plausible` rule, which checks each report). An explicit value is returned unchanged.

  Why `histogram` by default: under SecAgg+ a client hears only its k graph neighbours, and
  the quantile of so small a sample misses slow clients (`configs/studies/README.md`: CIFAR-10
  at k = 8, 3 seeds, recall 0.88 and a 5.6% mean cut against 15.1% and recall 1 with the
  histogram); under complete-graph SecAgg it hears every client as the reports do, within a
  bin, with no message of its own.
  """
  if straggler_info != "auto":
    return straggler_info
  return "histogram" if broadcasts and secagg and rule == "quantile" else "neighbours"


def edges(bins: int = DEFAULT_BINS, lo: float = DEFAULT_RANGE[0],
          hi: float = DEFAULT_RANGE[1]) -> np.ndarray:
  """f64[bins + 1] log-spaced bin edges from `lo` to `hi` seconds.

  Raises:
    ValueError: unless bins >= 2 and 0 < lo < hi (both finite).
  """
  if int(bins) != bins or bins < 2:
    raise ValueError(f"histogram bins={bins!r} must be an integer >= 2")
  if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
    raise ValueError(f"histogram range ({lo!r}, {hi!r}) must satisfy 0 < lo < hi, in seconds")
  return np.geomspace(float(lo), float(hi), int(bins) + 1)


def bin_of(times: np.ndarray, edge: np.ndarray) -> np.ndarray:
  """int[...] bin of each time; below the first edge -> 0, at or above the last -> bins - 1."""
  bins = len(edge) - 1
  return np.clip(np.searchsorted(edge, np.asarray(times, np.float64), side="right") - 1,
                 0, bins - 1)


def counts(times: np.ndarray, edge: np.ndarray) -> np.ndarray:
  """int64[bins]: how many of `times` fall in each bin (the sum of their one-hot rows)."""
  return np.bincount(bin_of(np.ravel(times), edge), minlength=len(edge) - 1).astype(np.int64)


def quantile(count: np.ndarray, edge: np.ndarray, q: float) -> float:
  """Type-7 quantile at level q of the sample the histogram `count` stands for (module doc);
  NaN for an empty histogram."""
  count = np.asarray(count, np.int64)
  if count.shape != (len(edge) - 1,) or np.any(count < 0):
    raise ValueError(f"histogram counts must be {len(edge) - 1} non-negative integers")
  total = int(count.sum())
  if total == 0:
    return float("nan")
  log_lo, log_hi = np.log(edge[:-1]), np.log(edge[1:])
  bin_ids = np.repeat(np.arange(len(count)), count)
  rank = np.arange(total) - np.repeat(np.cumsum(count) - count, count)  # j within its bin
  c = count[bin_ids]
  sample = np.exp(log_lo[bin_ids] + (rank + 0.5) / c * (log_hi[bin_ids] - log_lo[bin_ids]))
  h = q * (total - 1)
  if abs(h - round(h)) < 1e-4:  # the snap of `stragglers.masked_quantile`
    h = float(round(h))
  lo = int(np.floor(h))
  hi = min(lo + 1, total - 1)
  return float(sample[lo] + (h - lo) * (sample[hi] - sample[lo]))


@dataclasses.dataclass(frozen=True)
class TimeHistograms:
  """The aggregate the server sends with the model: counts of totals and of full-model fits."""

  total: np.ndarray  # int64[bins]
  fit: np.ndarray    # int64[bins]
  edge: np.ndarray   # f64[bins + 1]

  @classmethod
  def of(cls, fit: np.ndarray, net: np.ndarray, edge: np.ndarray) -> "TimeHistograms":
    """The sum of the one-hot rows of clients with these (fit, net) times."""
    fit, net = np.asarray(fit, np.float64), np.asarray(net, np.float64)
    return cls(counts(fit + net, edge), counts(fit, edge), edge)

  @property
  def clients(self) -> int:
    return int(self.total.sum())

  def stars(self, straggler_fraction: float) -> tuple[float, float]:
    """(T*, F*): the (1 - f) quantiles of the totals and of the fits."""
    q = 1.0 - straggler_fraction
    return quantile(self.total, self.edge, q), quantile(self.fit, self.edge, q)

  def straggler_bin(self, straggler_fraction: float) -> int:
    """The bin of x_floor(h), h = (1 - f)(n - 1), among the totals: a client whose total falls
    in a higher bin is a straggler (module doc). -1 for an empty histogram."""
    n = self.clients
    if n == 0:
      return -1
    h = (1.0 - straggler_fraction) * (n - 1)
    if abs(h - round(h)) < 1e-4:
      h = float(round(h))
    return int(np.searchsorted(np.cumsum(self.total), int(np.floor(h)) + 1))

  def flags(self, fit: np.ndarray, net: np.ndarray, straggler_fraction: float) -> np.ndarray:
    """bool[C]: which clients with these own times are stragglers (`straggler_bin`)."""
    own = np.asarray(fit, np.float64) + np.asarray(net, np.float64)
    return bin_of(own, self.edge) > self.straggler_bin(straggler_fraction)


def words(bins: int) -> int:
  """Coordinates each client appends to its SecAgg input: two one-hot rows."""
  return 2 * int(bins)
