"""Time reports (DESIGN 2.2): clients that lie in them, and the straggler decision rules.

Beyond the paper. A seeded fraction of the population lies: every time it broadcasts (its
full-model fit time and its network time) is its true time times a factor (0.1: "I am fast",
10: "I am slow"). The sealed broadcast is unchanged, so an honest client cannot tell who lied;
a liar decides for itself from its true times.

The rules, `REPORT_RULES`:

* `quantile` (DESIGN 2.2): T* = quantile(T, 1 - f) over the own time and every report heard.
  An order statistic is already robust to the size of a lie: with a fraction l of liars, the
  rank it picks moves by at most l, whatever the factor, as long as l < f (liars above) or the
  quantile stays among honest reports. Once the liars that claim to be slow are at least f of
  what a client hears, T* is a liar's inflated time and nobody honest prunes; liars that claim
  to be fast push every honest client's rank up, so more of them prune.
* `plausible`: the same quantile over the reports that public bounds allow. Every quantity an
  honest report depends on is public except the client's example count n and its tiers: the
  update size D, the model's FLOPs, the protocol's messages, the device tiers, the jitter
  sigma and the public bound on n (`secagg.max_weight`). A network time (download + upload +
  latency + mask expansion) must lie between the fastest and the slowest tier's, widened by
  `bound_sigmas` log-normal sigmas of jitter; a full-model fit time must lie between one
  example on the fastest CPU and max_weight examples on the slowest. A report outside is
  ignored, as if it had not arrived. The network bound is tight (the 4G/5G spread is about
  1.5x), so a liar that scales both times by 0.1 or 10 is caught; the fit bound is loose
  (n ranges over [1, max_weight]), so a liar that scales only its fit time mostly is not.

References:
  DiMaggio, Saileshwar, Sharma. CLIP. arXiv 2510.16694 (2025), Sec. 4.1 (the broadcast).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clipjax.clock import devices
from clipjax.clock.charges import CHACHA_OPS_PER_WORD

REPORT_RULES = ("quantile", "plausible")
_LIAR_STREAM = 0x4C494152  # separates the liars' draw from every other use of the seed


def choose_liars(seed: int, population: int, fraction: float) -> np.ndarray:
  """bool[K]: the round(fraction x K) population clients that lie, a pure function of seed.

  Raises:
    ValueError: for a fraction outside [0, 1].
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"liar fraction must be in [0, 1], got {fraction!r}")
  liars = np.zeros(population, bool)
  count = int(round(fraction * population))
  if count:
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _LIAR_STREAM])
    liars[rng.choice(population, size=count, replace=False)] = True
  return liars


def reported(fit: np.ndarray, net: np.ndarray, liar: np.ndarray,
             factor: float) -> tuple[np.ndarray, np.ndarray]:
  """The times clients broadcast: a liar's true times times `factor`, the others' as they are."""
  scale = np.where(np.asarray(liar, bool), float(factor), 1.0)
  return np.asarray(fit) * scale, np.asarray(net) * scale


@dataclasses.dataclass(frozen=True)
class Bounds:
  """The seconds an honest report can show: fit in [fit_lo, fit_hi], net in [net_lo, net_hi]."""

  fit_lo: float
  fit_hi: float
  net_lo: float
  net_hi: float

  def allows(self, fit: np.ndarray, net: np.ndarray) -> np.ndarray:
    """Which reports lie inside the bounds (up to float rounding of the sums, 1e-9 relative)."""
    fit, net = np.asarray(fit), np.asarray(net)
    lo, hi = 1.0 - 1e-9, 1.0 + 1e-9
    return ((fit >= self.fit_lo * lo) & (fit <= self.fit_hi * hi) & (net >= self.net_lo * lo)
            & (net <= self.net_hi * hi))


def plausible_bounds(tiers: devices.Tiers, *, full_flops_per_example: float, max_examples: float,
                     epochs: int, download_bytes, upload_bytes, mask_flops, messages,
                     jitter_sigma: float, sigmas: float) -> Bounds:
  """Bounds on an honest report from public quantities only (see the module docstring).

  Args:
    tiers: the public device tiers (every compute and network tier a client may have).
    full_flops_per_example: training FLOPs of one example, one epoch, full model.
    max_examples: the public bound on a client's examples (`secagg.max_weight`).
    epochs: local epochs.
    download_bytes, upload_bytes, mask_flops, messages: what a full-model client's round
      takes part in, scalars or arrays over the round types a report may come from (their
      min and max are used).
    jitter_sigma: the public log-normal jitter sigma of compute and network times.
    sigmas: allowance in sigmas each way.

  Returns:
    The `Bounds`.
  """
  lo_j, hi_j = np.exp(-sigmas * jitter_sigma), np.exp(sigmas * jitter_sigma)
  rates = np.asarray(list(tiers.compute.values()), np.float64)
  nets = list(tiers.network.values())

  def net_time(pick, down, up, words, msgs):
    down_s = pick(8.0 * down / t.downlink_bps for t in nets)
    up_s = pick(8.0 * up / t.uplink_bps for t in nets)
    lat_s = pick(msgs * t.latency_s for t in nets)
    return down_s, up_s, lat_s, words / (rates.max() if pick is min else rates.min())

  def span(x):
    x = np.asarray(x, np.float64)
    return float(x.min()), float(x.max())

  (d_lo, d_hi), (u_lo, u_hi), (w_lo, w_hi), (m_lo, m_hi) = map(
      span, (download_bytes, upload_bytes, mask_flops, messages))
  low = net_time(min, d_lo, u_lo, w_lo, m_lo)
  high = net_time(max, d_hi, u_hi, w_hi, m_hi)
  work = full_flops_per_example * epochs
  return Bounds(fit_lo=work * 1.0 / rates.max() * lo_j,
                fit_hi=work * max_examples / rates.min() * hi_j,
                net_lo=float(sum(low)) * lo_j, net_hi=float(sum(high)) * hi_j)


def round_bounds(rep, clock, charger, *, num: int, full_units: dict, num_params: int, setup,
                 relay_bytes, reference: bool) -> Bounds:
  """What an honest report can show this round, from public quantities (`plausible_bounds`):
  a client's charges in a round without and with the broadcast; in the clear, from an upload
  of nothing but the weight to the full model.

  Args:
    rep: the run's `settings.ReportSetting` (public tiers, example bound, jitter).
    clock: the run's `charges.ClockModel` (FLOPs per example, epochs).
    charger: the run's `charges.RoundCharger`.
    num: cohort clients; full_units: {layer: int[num]} every unit kept.
    num_params: D.
    setup: this round's key agreement; relay_bytes: this round's broadcast bytes per client.
    reference: the server also sends w(t-1).
  """
  kept = [num_params] if charger.secagg_on else [0, num_params]  # in the clear it shrinks
  nominal = [charger(full_units, np.full(num, k), num_params, setup, b,
                     relay_bytes if b else (0, 0), reference)
             for b in (False, True) for k in kept]
  pick = lambda f: np.concatenate([f(c) for c in nominal])  # noqa: E731
  return plausible_bounds(
      rep.tiers, full_flops_per_example=clock.flops_per_example(dict(clock.full_widths)),
      max_examples=rep.max_examples, epochs=clock.epochs,
      download_bytes=pick(lambda c: c.download_bytes), upload_bytes=pick(lambda c: c.upload_bytes),
      mask_flops=pick(lambda c: c.mask_words) * CHACHA_OPS_PER_WORD,
      messages=pick(lambda c: c.messages), jitter_sigma=rep.jitter_sigma, sigmas=rep.sigmas)
