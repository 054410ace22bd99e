"""The bit-plane secure sum (issue 26): two independent SecAgg(+) instances, one decoded sum.

:class:`PlaneSumStream` drives a high instance over the whole cohort and, when at least two of
its clients are not network stragglers, a low instance over those clients only
(:mod:`clipjax.secagg.planes` has the arithmetic). Each instance is an unchanged
:class:`clipjax.secagg.SecureSumStream` with its own :class:`RoundSetup`: its own keys, graph,
Shamir shares and (k, t), chosen by :mod:`clipjax.secagg.params` for its own n, the low one
against the cohort's numbers of colluders and drop-outs (they may all have joined it). The low
instance numbers its clients 0..n_lo - 1 in cohort order; each rounds with the key of its
cohort id (``noise_ids``), so both instances see the same codes.

What the server learns: the high planes' sum over the high survivors and the residuals' sum
over the low survivors, each over at least its instance's t clients or that instance aborts;
and who joined the low instance (the clients that did not call themselves network stragglers),
which the sizes of their uploads show anyway. The round aborts only if the high instance
does; a low instance that aborts (or has fewer than 2 clients) costs precision, not the update.

A client that drops out of the round drops out of both instances at the same stage
(:func:`low_setup` maps the high instance's drop-outs), as a failing device would.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from clipjax.secagg import params as params_lib
from clipjax.secagg import planes, quantize
from clipjax.secagg.blinding import DEFAULT_BUDGET_WORDS
from clipjax.secagg import protocol as protocol_lib
from clipjax.secagg.aggregate import SecureSumResult, check_options
from clipjax.secagg.protocol import STAGES, Dropouts, RoundAborted, RoundSetup
from clipjax.secagg.stream import SecureSumStream

MIN_LOW_CLIENTS = 2  # a secure sum needs at least 2 clients


@dataclasses.dataclass(frozen=True)
class PlaneSumResult:
  """One round's bit-plane secure sum.

  Attributes:
    total, weight_total, mean: as :class:`clipjax.secagg.SecureSumResult`'s, decoded from both
      planes (``planes.combine``).
    survivors: bool ``[C]`` clients whose high plane is in the sum (the update's survivors).
    low_survivors: bool ``[C]`` clients whose low plane is in the sum.
    low_aborted: why the low instance contributed nothing ("" if it did): it aborted, or had
      fewer than 2 clients.
    high: the high instance's :class:`SecureSumResult` (its ``encoded_sum``: the exact sum of the
      high planes).
    low: the low instance's, in its own numbering (None if it contributed nothing).
    low_members: int ``[n_lo]`` cohort ids of the low instance's clients, in its numbering.
  """

  total: np.ndarray
  weight_total: float
  mean: np.ndarray
  survivors: np.ndarray
  low_survivors: np.ndarray
  low_aborted: str
  high: SecureSumResult
  low: SecureSumResult | None
  low_members: np.ndarray


def low_members(num_clients: int, high_only) -> np.ndarray:
  """Cohort ids (ascending) that send a low plane: every client not in ``high_only``."""
  high_only = np.asarray(high_only, bool)
  if high_only.shape != (num_clients,):
    raise ValueError(f"high_only must be bool [{num_clients}], one flag per client; got shape "
                     f"{high_only.shape}")
  return np.flatnonzero(~high_only)


def low_threat(threat: params_lib.ThreatModel, num_clients: int,
               num_low: int) -> params_lib.ThreatModel | str:
  """The low instance's threat model: the cohort's corrupt and dropped counts, all of them
  possibly among its ``num_low`` members (clients choose to join it, so colluders can), as
  fractions of ``num_low``; or why no low instance can run (fewer than 2 honest survivors)."""
  corrupt, dropped = threat.counts(num_clients)
  if num_low < corrupt + dropped + 2:
    return (f"{num_low} clients sent a low plane; with up to {corrupt} colluders and "
            f"{dropped} drop-outs among them (the cohort's) fewer than 2 honest ones would "
            "remain")
  # +0.5: counts(num_low) floors these back to exactly (corrupt, dropped).
  return dataclasses.replace(threat, corruption_fraction=(corrupt + 0.5) / num_low,
                             dropout_fraction=(dropped + 0.5) / num_low)


def low_setup(high: RoundSetup, members: np.ndarray, *, seed: int | None,
              **kwargs) -> RoundSetup | str:
  """The low instance's AdvertiseKeys over ``members``: its setup, or why it does not run.

  Its drop-outs are the high instance's, mapped to the low numbering (a client that fails
  fails in both). Its (k, t) come from the analysis at its own n against the high instance's
  absolute numbers of colluders and drop-outs (:func:`low_threat`); an explicit degree or
  threshold in ``kwargs`` (:func:`clipjax.secagg.setup_round`'s other arguments) is for the
  high instance's n and is not passed on. No low instance runs with fewer than 2 members, too
  few to keep 2 honest survivors, no (k, t) meeting the targets, or too few advertised keys.
  """
  members = np.asarray(members, np.int64)
  if len(members) < MIN_LOW_CLIENTS:
    return f"fewer than {MIN_LOW_CLIENTS} clients sent a low plane"
  threat = low_threat(high.params.threat, high.num_clients, len(members))
  if isinstance(threat, str):
    return threat
  local = {int(u): i for i, u in enumerate(members)}
  mapped = {stage: [local[u] for u in sorted(high.dropouts[stage]) if u in local]
            for stage in STAGES}
  kwargs = {k: v for k, v in kwargs.items()
            if k not in ("degree", "threshold", "dropouts", "threat", "allow_weak")}
  try:
    return protocol_lib.setup_round(len(members), seed=seed, round_index=high.round_index,
                                    dropouts=Dropouts(**mapped), simulate=high.simulate,
                                    threat=threat, **kwargs)
  except RoundAborted as e:
    return str(e)
  except ValueError as e:  # no (k, t) meets the targets at this n
    return f"no low instance: {e}"


class PlaneSumStream:
  """The bit-plane secure sum fed chunk by chunk (see the module docstring).

  Attributes:
    clients: sorted cohort ids that must be added (the high instance's expected senders).
  """

  def __init__(self, high_setup: RoundSetup, low: RoundSetup | None, members, weights=None, *,
               max_weight: float | None = None, dim: int, bits: int, high_bits: int,
               clip: float = 1.0, rng: jax.Array | None = None, **stream_kwargs):
    """Runs ShareKeys of both instances.

    Args:
      high_setup: the high instance's setup over the C cohort clients.
      low: what :func:`low_setup` gave: the low instance's setup over ``members``, or why it
        does not run.
      members: int ``[n_lo]`` cohort ids of the low instance's clients (ascending).
      weights, max_weight, dim, bits, clip, rng: as for :class:`SecureSumStream` (``rng`` is
        shared: both instances must round with the same keys; default: the high setup's seed).
      high_bits: h, bits of the high plane (l = bits - h below it).

    Raises:
      ValueError: on bad options or members.
      RoundAborted: if the high instance aborts at ShareKeys (a low abort is recorded).
    """
    n = high_setup.num_clients
    self._clip, _, self._scale = check_options(
        n, bits, clip, stream_kwargs.get("budget_words", DEFAULT_BUDGET_WORDS), weights,
        max_weight)
    self._low_bits = int(bits) - planes.check_high_bits(high_bits, int(bits))
    self._bits, self.dim = int(bits), int(dim)
    members = np.asarray(members, np.int64)
    if members.ndim != 1 or np.any(np.diff(members) <= 0) or np.any(members < 0) \
        or np.any(members >= n):
      raise ValueError(f"members must be ascending distinct cohort ids in [0, {n}); got "
                       f"{members.tolist()}")
    if not isinstance(low, (RoundSetup, str)):
      raise ValueError(f"low={low!r} must be plane_sum.low_setup's result: a RoundSetup or the "
                       "reason there is no low instance")
    if isinstance(low, RoundSetup) and low.num_clients != len(members):
      raise ValueError(f"the low setup is for {low.num_clients} clients but members lists "
                       f"{len(members)}")
    if rng is None and high_setup.seed is not None:
      rng = jax.random.key(high_setup.seed)
    elif rng is None:
      rng = jax.random.key(int(np.random.SeedSequence().generate_state(1)[0]))
    self._members = members
    self._local = np.full(n, -1, np.int64)
    self._local[members] = np.arange(len(members))
    kw = dict(max_weight=max_weight, dim=dim, bits=bits, clip=clip, rng=rng, **stream_kwargs)
    high_ring, low_ring = planes.rings(n, len(members), self._low_bits, self._bits)
    self._high = SecureSumStream(high_setup, weights,
                                 plane=planes.Plane("high", self._low_bits, high_ring), **kw)
    self.clients = self._high.clients
    self._low, self._low_aborted = None, ""
    if isinstance(low, str):
      self._low_aborted = low
      return
    low_weights = None if weights is None else np.asarray(weights)[members]
    try:
      self._low = SecureSumStream(low, low_weights, noise_ids=members,
                                  plane=planes.Plane("low", self._low_bits, low_ring), **kw)
    except RoundAborted as e:
      self._low_aborted = str(e)

  @property
  def low_running(self) -> bool:
    """The low instance went through ShareKeys: its members send their low planes."""
    return self._low is not None

  def add(self, ids, updates) -> None:
    """Adds the cohort clients ``ids``' updates (float ``[len(ids), D]``) to both instances."""
    ids = np.asarray(ids, np.int64)
    self._high.add(ids, updates)
    if self._low is not None:
      mine = self._local[ids] >= 0
      if mine.any():
        self._low.add(self._local[ids[mine]], updates[np.flatnonzero(mine)])

  def finish(self) -> PlaneSumResult:
    """Unmasks both instances and decodes.

    Raises:
      RoundAborted: if the high instance aborts.
    """
    high = self._high.finish()
    low, why = None, self._low_aborted
    if self._low is not None:
      try:
        low = self._low.finish()
      except RoundAborted as e:
        why = str(e)
    dim = self.dim
    low_survivors = np.zeros(len(self._local), bool)
    if low is not None:
      low_survivors[self._members[np.asarray(low.survivors, bool)]] = True
    codes = planes.combine(high.encoded_sum[:dim], None if low is None else low.encoded_sum[:dim],
                           int(low_survivors.sum()), self._low_bits)
    count = int(np.sum(high.survivors))
    total = quantize.decode(codes, count, self._clip, self._bits) * self._scale
    weight_total = float(high.weight_total)
    mean = total / weight_total if weight_total > 0 else np.full(dim, np.nan)
    return PlaneSumResult(total=total, weight_total=weight_total, mean=mean,
                          survivors=np.asarray(high.survivors, bool),
                          low_survivors=low_survivors, low_aborted=why, high=high, low=low,
                          low_members=self._members)


def plane_sum(updates, weights=None, *, high_only, high_bits: int, bits: int = 16,
              clip: float = 1.0, max_weight: float | None = None, protocol: str = "secagg+",
              dropouts: Dropouts | None = None, seed: int | None = None,
              simulate: str = "protocol", rng: jax.Array | None = None, **kwargs
              ) -> PlaneSumResult:
  """The bit-plane secure sum of float ``[C, D]`` updates in one call (tests, notebooks).

  Args:
    updates, weights, bits, clip, max_weight, protocol, dropouts, seed, simulate, rng: as for
      :func:`clipjax.secagg.secure_sum`.
    high_only: bool ``[C]`` clients that send only the high plane (network stragglers).
    high_bits: h.
    kwargs: further :func:`clipjax.secagg.setup_round` arguments (threat, allow_weak, ...).
  """
  updates = np.asarray(updates)
  n, dim = updates.shape
  high = protocol_lib.setup_round(n, protocol=protocol, seed=seed, dropouts=dropouts,
                                  simulate=simulate, **kwargs)
  members = low_members(n, high_only)
  low_seed = (None if seed is None
              else int(np.random.SeedSequence([seed, 0x6C6F]).generate_state(1)[0]))
  low = low_setup(high, members, seed=low_seed, protocol=protocol, **kwargs)
  stream = PlaneSumStream(high, low, members, weights, max_weight=max_weight, dim=dim,
                          bits=bits, high_bits=high_bits, clip=clip, rng=rng)
  stream.add(np.arange(n), updates)
  return stream.finish()
