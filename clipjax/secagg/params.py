"""SecAgg / SecAgg+ parameters (k, t) from Bell et al.'s analysis, with their failure bounds.

A round is safe when three bad events are unlikely (Bell et al. 2020, the conditions on the
communication graph and the Shamir threshold of their SecAgg+ security and correctness
theorems):

* ``leak``: some honest client u has at least t corrupt neighbours. Those colluders hold t
  shares of both u's self-mask seed and its masking key, so with the server they unmask u's
  input.
* ``split``: the graph on the honest clients whose input is in the sum (corrupt clients and
  clients that dropped before sending their masked input removed) is disconnected. Pairwise
  masks then cancel inside each component and the server learns each component's partial sum.
* ``abort``: some client's secret cannot be rebuilt because fewer than t of its share holders
  survive: a surviving client reveals its own share and needs t - 1 surviving neighbours; a
  dropped client needs t surviving neighbours. The round (or, at ShareKeys, that client) is lost.

``security = P[leak] + P[split] <= 2^-sigma`` and ``P[abort] <= 2^-eta`` are the targets
(``sigma`` = ``security_bits``, default 40; ``eta`` = ``correctness_bits``, default 20, the
statistical parameters of Google's SecAgg+ parameter finder). Each probability below is an
exact union bound computed with integer binomial coefficients (``math.comb``), not a table.

Assumptions (stated, not checked at run time):

* Honest-but-curious server; at most ``c = floor(gamma n)`` clients corrupted (they follow the
  protocol but pool everything they hold with the server), chosen before the graph is drawn;
  at most ``d = floor(delta n)`` drop-outs, independent of the graph. The bounds are monotone
  in c and d, so the largest counts are the worst case.
* SecAgg+ graph: the Harary graph H(n, k) (ring, each node linked to its k/2 nearest on each
  side, plus the diameter for odd k) with node labels drawn uniformly at random
  (:func:`clipjax.secagg.graph.random_harary_graph`). A client's neighbour set is then a
  uniformly random k-subset of the other n - 1 clients, so its corrupt (dropped) neighbours
  are hypergeometric. SecAgg is the complete graph, k = n - 1.
* Disconnection of H(n, k) by a removed set needs two disjoint runs of floor(k/2) consecutive
  removed ring positions with a kept node between them on both sides; there are
  n (n - k' - 1) / 2 such pairs (k' = 2 floor(k/2)), each fully removed with probability
  ``C(n - k', m - k') / C(n, m)`` for m = c + d removed clients.

Parameter choice: the smallest even k < n - 1 (then k = n - 1) whose smallest secure t >= 2
also meets the correctness target; t = 1 (one share reveals the secret) is never chosen.

References:
  J. Bell, K. Bonawitz, A. Gascon, T. Lepoint, M. Raykova. Secure Single-Server Aggregation with
  (Poly)Logarithmic Overhead. CCS 2020 (SecAgg+, its graph conditions and their analysis).
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017 (the complete-graph protocol, threshold t).
  Google's federated-compute ``fcp/secagg/server/graph_parameter_finder.cc`` instantiates the
  same three events for a randomly labelled Harary graph (the run-pair bound above); this
  module is an independent, exact (integer) implementation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from fractions import Fraction

import numpy as np

from clipjax.secagg import checks

PROTOCOLS = ("secagg", "secagg+")
DEFAULT_SECURITY_BITS = 40
DEFAULT_CORRECTNESS_BITS = 20


@dataclasses.dataclass(frozen=True)
class ThreatModel:
  """What the parameters must withstand.

  Attributes:
    corruption_fraction: gamma, the largest fraction of clients colluding with the server.
    dropout_fraction: delta, the largest fraction of clients that drop out in a round.
    security_bits: sigma: P[leak] + P[split] <= 2^-sigma.
    correctness_bits: eta: P[abort] <= 2^-eta.
  """
  corruption_fraction: float = 0.2
  dropout_fraction: float = 0.1
  security_bits: int = DEFAULT_SECURITY_BITS
  correctness_bits: int = DEFAULT_CORRECTNESS_BITS

  def __post_init__(self):
    for name in ("corruption_fraction", "dropout_fraction"):
      value = getattr(self, name)
      if not checks.is_real(value) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r} must be a number in [0, 1)")
      # NumPy scalars become the Python float they stand for: same counts, equality, JSON.
      object.__setattr__(self, name, checks.as_float(value))
    if self.corruption_fraction + self.dropout_fraction >= 1:
      raise ValueError(f"corruption_fraction + dropout_fraction = {self.corruption_fraction} + "
                       f"{self.dropout_fraction} must be below 1 (some honest client must "
                       "survive)")
    for name in ("security_bits", "correctness_bits"):
      value = getattr(self, name)
      if not checks.is_integer(value) or not 1 <= value <= 256:
        raise ValueError(f"{name}={value!r} must be an integer in [1, 256]")
      object.__setattr__(self, name, int(value))

  def counts(self, num_clients: int) -> tuple[int, int]:
    """(c, d): the largest numbers of corrupt and dropped clients among ``num_clients``."""
    # The small slack keeps e.g. 0.2 * 10 = 2 from flooring to 1 through rounding.
    return (math.floor(self.corruption_fraction * num_clients + 1e-9),
            math.floor(self.dropout_fraction * num_clients + 1e-9))


@dataclasses.dataclass(frozen=True)
class SecAggParameters:
  """A protocol's (k, t) for n clients and the failure bounds it achieves.

  Attributes:
    num_clients, protocol, degree, threshold: n, protocol name, k, t.
    threat: the :class:`ThreatModel` the bounds are computed for.
    p_leak, p_split, p_abort: union bounds on the three bad events (see module doc).
    source: "analysis" (chosen here), "explicit" (the caller's k and/or t, secure), or
      "weak (opted in)" (fails the security target; allowed only with ``allow_weak``).
  """
  num_clients: int
  protocol: str
  degree: int
  threshold: int
  threat: ThreatModel
  p_leak: float
  p_split: float
  p_abort: float
  source: str

  @property
  def p_security(self) -> float:
    return min(1.0, self.p_leak + self.p_split)

  @property
  def secure(self) -> bool:
    return _secure(self.threshold, self.p_leak + self.p_split, self.threat)

  @property
  def correct(self) -> bool:
    return self.p_abort <= 2.0 ** -self.threat.correctness_bits

  def as_dict(self) -> dict:
    c, d = self.threat.counts(self.num_clients)
    return {"protocol": self.protocol, "num_clients": self.num_clients, "degree": self.degree,
            "threshold": self.threshold, "source": self.source,
            "corruption_fraction": self.threat.corruption_fraction, "max_corrupt": c,
            "dropout_fraction": self.threat.dropout_fraction, "max_dropouts": d,
            "security_bits": self.threat.security_bits,
            "correctness_bits": self.threat.correctness_bits,
            "p_leak": self.p_leak, "p_split": self.p_split, "p_abort": self.p_abort}

  def describe(self) -> str:
    c, d = self.threat.counts(self.num_clients)
    return (f"{self.protocol} n={self.num_clients} k={self.degree} t={self.threshold} "
            f"({self.source}; <= {c} corrupt, <= {d} drop-outs): P[leak] <= {self.p_leak:.3g}, "
            f"P[split] <= {self.p_split:.3g} (target 2^-{self.threat.security_bits} = "
            f"{2.0 ** -self.threat.security_bits:.3g}), P[abort] <= {self.p_abort:.3g} "
            f"(target 2^-{self.threat.correctness_bits} = "
            f"{2.0 ** -self.threat.correctness_bits:.3g})")


def _secure(threshold: int, p_security, threat: ThreatModel) -> bool:
  return threshold >= 2 and p_security <= Fraction(1, 2 ** threat.security_bits)


def _hyper_tail(population: int, marked: int, draws: int, at_least: int) -> Fraction:
  """P[X >= at_least] for X ~ Hypergeometric(population, marked, draws), exactly."""
  lo = max(at_least, 0, draws - (population - marked))
  hi = min(marked, draws)
  if lo > hi:
    return Fraction(0)
  num = sum(math.comb(marked, x) * math.comb(population - marked, draws - x)
            for x in range(lo, hi + 1))
  return Fraction(num, math.comb(population, draws))


def _cap(p: Fraction) -> Fraction:
  return min(p, Fraction(1))


@functools.lru_cache(maxsize=4096)
def _p_split(n: int, k: int, removed: int) -> Fraction:
  if k >= n - 1:
    return Fraction(0)  # complete graph: the kept clients are pairwise linked
  run = 2 * (k // 2)
  if run == 0:
    return Fraction(1)  # k = 1 < n - 1: a matching, disconnected before anyone is removed
  if removed < run:
    return Fraction(0)
  pairs = Fraction(n * (n - run - 1), 2)
  both_runs_removed = Fraction(math.perm(removed, run), math.perm(n, run))
  return _cap(pairs * both_runs_removed)


@functools.lru_cache(maxsize=65536)
def _bounds(n: int, k: int, t: int, c: int, d: int) -> tuple[Fraction, Fraction, Fraction]:
  honest = n - c
  p_leak = _cap(honest * _hyper_tail(n - 1, c, k, t))
  p_split = _p_split(n, k, c + d)
  if n - d < t:
    p_abort = Fraction(1)
  else:
    survivor = (n - d) * _hyper_tail(n - 1, d, k, k - t + 2)   # > k - (t - 1) dropped
    dropped = d * _hyper_tail(n - 1, max(d - 1, 0), k, k - t + 1) if d else Fraction(0)
    p_abort = _cap(survivor + dropped)
  return p_leak, p_split, p_abort


def check_threat(threat) -> ThreatModel:
  """``threat``, or the default :class:`ThreatModel` for None; ValueError for anything else."""
  if threat is None:
    return ThreatModel()
  if not isinstance(threat, ThreatModel):
    raise ValueError(f"threat={threat!r} must be a clipjax.secagg.ThreatModel or None (the "
                     "default: 20% corrupt, 10% drop-outs), e.g. ThreatModel(corruption_fraction"
                     "=0.1)")
  return threat


def failure_bounds(num_clients: int, degree: int, threshold: int,
                   threat: ThreatModel) -> tuple[float, float, float]:
  """(P[leak], P[split], P[abort]) union bounds for n, k, t under ``threat`` (module doc).

  Raises:
    ValueError: for n, k, t that no graph and threshold have (see :func:`choose_parameters`),
      or a ``threat`` that is not a :class:`ThreatModel`.
  """
  threat = check_threat(threat)
  for name, value in (("degree", degree), ("threshold", threshold)):
    if value is None:
      raise ValueError(f"{name}=None: failure_bounds needs an explicit {name}; "
                       "choose_parameters chooses it")
  n, degree, threshold = _check_shape(num_clients, "secagg+", degree, threshold)
  c, d = threat.counts(n)
  return tuple(float(p) for p in _bounds(n, degree, threshold, c, d))


def abort_bound_under_rate(params: SecAggParameters, rate: float) -> float:
  """P[abort] per round when every client drops independently with probability ``rate``.

  ``Dropouts(rate=...)`` drops D ~ Binomial(n, rate) clients, which exceeds the analysed
  floor(delta n) in a large share of rounds (at n = 50, rate 0.1: P[D > 5] = 0.38), so the
  analysis' P[abort], a bound for at most floor(delta n) drop-outs, does not hold for it. This
  is the bound that does: sum over d of P[D = d] * min(1, P[abort | d drop-outs]), the second
  factor the same union bound as the analysis' (module doc) evaluated at d; terms with
  P[D = d] below 1e-30 are counted as aborts without analysis.

  Raises:
    ValueError: for a rate outside [0, 1).
  """
  if not checks.is_real(rate) or not 0.0 <= float(rate) < 1.0:
    raise ValueError(f"rate={rate!r} must be a number in [0, 1)")
  rate = float(rate)
  n, k, t = params.num_clients, params.degree, params.threshold
  c, _ = params.threat.counts(n)
  total, mass = 0.0, 0.0
  for d in range(n + 1):
    p_d = math.comb(n, d) * rate ** d * (1.0 - rate) ** (n - d)
    mass += p_d
    if p_d < 1e-30:  # too rare to matter: counted as an abort, not analysed
      total += p_d
      if d > n * rate:
        break
      continue
    total += p_d * float(_bounds(n, k, t, c, d)[2])
  return min(1.0, total + max(0.0, 1.0 - mass))


def _check_shape(n, protocol: str, degree, threshold) -> tuple[int, int | None, int | None]:
  """(n, k, t) as Python ints (None kept), or ValueError for an impossible combination."""
  if not isinstance(protocol, str) or protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r} is unknown; allowed: {PROTOCOLS}")
  if not checks.is_integer(n) or n < 2:
    raise ValueError(f"num_clients={n!r} must be an integer >= 2")
  for name, value in (("degree", degree), ("threshold", threshold)):
    if value is not None and not checks.is_integer(value):
      raise ValueError(f"{name}={value!r} must be an integer or None")
  n = int(n)
  degree = None if degree is None else int(degree)
  threshold = None if threshold is None else int(threshold)
  if degree is not None:
    if protocol == "secagg" and degree != n - 1:
      raise ValueError(f"degree={degree}: SecAgg uses the complete graph (degree n - 1 = {n - 1})"
                       "; use protocol='secagg+' for a sparser graph")
    if not 1 <= degree <= n - 1:
      raise ValueError(f"degree={degree} must be in [1, {n - 1}] for num_clients={n}")
    if degree < n - 1 and degree % 2 and n % 2:
      raise ValueError(f"no {degree}-regular graph on {n} clients: num_clients * degree must be "
                       "even")
  if threshold is not None:
    top = (n - 1 if degree is None else degree) + 1
    if not 1 <= threshold <= top:
      raise ValueError(f"threshold={threshold} must be in [1, {top}] (a client's shares go to "
                       f"itself and its {top - 1} neighbours; num_clients={n})")
  return n, degree, threshold


def _make(n, protocol, k, t, threat, source) -> SecAggParameters:
  p_leak, p_split, p_abort = failure_bounds(n, k, t, threat)
  return SecAggParameters(n, protocol, k, t, threat, p_leak, p_split, p_abort, source)


def choose_parameters(num_clients: int, *, protocol: str = "secagg+", degree: int | None = None,
                      threshold: int | None = None, threat: ThreatModel | None = None,
                      allow_weak: bool = False) -> SecAggParameters:
  """(k, t) for ``num_clients`` from the analysis, or the caller's choice checked against it.

  With neither ``degree`` nor ``threshold``: the smallest even k < n - 1 (else n - 1) whose
  smallest secure t meets both targets. With one of them fixed, the other is chosen the same
  way; if no choice meets the correctness target, the most robust secure one is returned and
  its P[abort] reported (an unreliable round is the caller's explicit choice; a leaky one is
  not). With both fixed, they are only checked.

  Args:
    num_clients: n, at least 2.
    protocol: "secagg" (complete graph) or "secagg+" (randomly labelled Harary graph).
    degree: k, or None to choose it (ignored for "secagg", which has k = n - 1).
    threshold: t, or None to choose it.
    threat: the :class:`ThreatModel` (default: 20% corrupt, 10% drop-outs, 40/20 bits).
    allow_weak: accept explicit (k, t) that miss the security target (t = 1 included), e.g. to
      reproduce :func:`clipjax.secagg.graph.heuristic_degree_2log2n` runs. Never chosen here.

  Returns:
    :class:`SecAggParameters` with the failure bounds.

  Raises:
    ValueError: on impossible n, k, t, an explicit choice below the security target without
      ``allow_weak``, or a threat no (k, t) meets.
  """
  threat = check_threat(threat)
  n, degree, threshold = _check_shape(num_clients, protocol, degree, threshold)
  if not isinstance(allow_weak, (bool, np.bool_)):
    raise ValueError(f"allow_weak={allow_weak!r} must be True or False (True accepts an explicit "
                     "degree/threshold that misses the security target)")
  if threshold == 1 and not allow_weak:
    raise ValueError("threshold=1 lets any single share holder rebuild a secret; allowed: "
                     "threshold >= 2, or allow_weak_parameters=True to run it anyway")
  explicit = degree is not None or threshold is not None
  if protocol == "secagg":
    degree = n - 1
  if degree is not None and threshold is not None:
    params = _make(n, protocol, degree, threshold, threat, "explicit")
    if params.secure:
      return params
    if allow_weak:
      return dataclasses.replace(params, source="weak (opted in)")
    raise ValueError(
        f"degree={degree}, threshold={threshold} miss the security target: {params.describe()}."
        " Leave degree/threshold unset to get parameters from the analysis, or set "
        "allow_weak_parameters=True to run them anyway")
  degrees = [degree] if degree is not None else (
      [k for k in range(2, n - 1, 2)] + [n - 1])
  c, d = threat.counts(n)
  most_robust = None  # (P[abort], k, t) of the secure choice least likely to abort
  for k in degrees:
    if threshold is not None:
      candidates = [threshold] if threshold <= k + 1 else []
    else:
      candidates = range(2, k + 2)
    for t in candidates:
      p_leak, p_split, p_abort = _bounds(n, k, t, c, d)
      if not _secure(t, p_leak + p_split, threat):
        continue  # p_leak falls as t grows: try the next t
      if p_abort <= Fraction(1, 2 ** threat.correctness_bits):
        return _make(n, protocol, k, t, threat, "explicit" if explicit else "analysis")
      if most_robust is None or (p_abort, -k) < (most_robust[0], -most_robust[1]):
        most_robust = (p_abort, k, t)  # ties (bounds capped at 1): more holders
      break  # p_abort grows with t: no larger t is correct either
  if explicit and most_robust is not None:
    return _make(n, protocol, most_robust[1], most_robust[2], threat, "explicit")
  cgiven = f"degree={degree}, " if degree is not None else ""
  tgiven = f"threshold={threshold}, " if threshold is not None else ""
  raise ValueError(
      f"no {protocol} parameters for num_clients={n} ({cgiven}{tgiven}corruption_fraction="
      f"{threat.corruption_fraction}, dropout_fraction={threat.dropout_fraction}) reach "
      f"2^-{threat.security_bits} security and 2^-{threat.correctness_bits} correctness; lower "
      "the fractions or the bits, use more clients, or give degree and threshold with "
      "allow_weak_parameters=True")
