"""Server aggregation as a small strategy: a rule (what is averaged) over a transport (how summed).

Rules (DESIGN 2.7), the registry `AGGREGATIONS`:

* `padded` (the paper's): the mean of zero-padded deltas weighted by examples. A coordinate a
  straggler pruned counts as a zero in its average.
* `participation_weighted` (FLuID's rule, beyond the paper under SecAgg): each coordinate is
  averaged over the clients that trained it. Under SecAgg the clients also securely sum their
  weighted 0/1 parameter masks, which doubles the upload.

Transports: `secure` runs SecAgg (`clipjax.secagg.SecureSumStream`: host code around jitted
masking; it may raise `RoundAborted`); `plain` is the in-the-clear weighted sum, jitted.
`fluid` (which reads individual updates) and `fedavg` without SecAgg use `plain`.

Both transports are sums, so a round is fed chunk by chunk (DESIGN 2.9): `make_aggregator`
returns an `Aggregator`; `aggregator.begin(weights, setup)` starts a round's `Accumulator`,
`add(rows, deltas, param_masks)` adds a chunk of clients, and `finish()` gives the mean. Memory
is one chunk of deltas plus one params-sized sum. A round fed in one chunk gives exactly the
one-shot mean (`aggregator(deltas, weights, param_masks, setup)`).

Several processes (`clipjax.multihost`): each feeds only its own clients; `begin` and `finish`
are then collectives. Under SecAgg, process 0 holds the server side (the stream): it hands each
other process the key material of its own chunks at `begin` (`Processes.scatter`: no process
receives another's), they send their partial masked sums (D + 1 words each) at `finish`, and
process 0 sends back the total, the survivors and the SecAgg counters, never the
`secagg.SecureSumResult`: its `setup` holds every simulated client's private keys. In the clear, every
process sums its clients and the partial sums are added in process order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from clipjax import models, multihost, secagg
from clipjax.secagg import plane_sum
from clipjax.fl import server as server_lib

PyTree = Any

AGGREGATIONS = ("padded", "participation_weighted")


class Aggregated(NamedTuple):
  """One round's aggregate.

  Attributes:
    mean_delta: params-shaped mean update.
    survivors: bool[C], clients whose update is in the mean.
    secagg: the `SecureSumResult` (None in the clear, and on processes other than 0).
    report: the SecAgg fields of the round's metrics row (`secagg_report`), {} in the clear.
  """

  mean_delta: PyTree
  survivors: np.ndarray
  secagg: Any
  report: dict = {}
  low_survivors: np.ndarray | None = None  # `clip.upload=planes`: whose low plane is summed


def secagg_report(result) -> dict[str, Any]:
  """The SecAgg fields of a metrics row: survivors, drop-outs, bytes per client, seconds (the
  high instance's, with the low instance's survivors and abort under `clip.upload=planes`)."""
  if isinstance(result, plane_sum.PlaneSumResult):
    return {**secagg_report(result.high),
            "secagg_low_survivors": int(np.sum(result.low_survivors)),
            "secagg_low_aborted": result.low_aborted}
  stats = result.stats
  sent = sum(np.asarray(v, np.float64) for v in stats.bytes_sent.values())
  received = sum(np.asarray(v, np.float64) for v in stats.bytes_received.values())
  return {"secagg_survivors": int(np.sum(result.survivors)),
          "secagg_dropped": int(np.size(result.survivors) - np.sum(result.survivors)),
          "secagg_bytes_sent_per_client": float(np.mean(sent)),
          "secagg_bytes_received_per_client": float(np.mean(received)),
          "secagg_seconds": {k: round(float(v), 4) for k, v in stats.seconds.items()},
          "secagg_nonfinite": list(result.nonfinite),
          "secagg_too_few_holders": list(result.too_few_holders)}


def _abort_info(err) -> tuple:
  return (str(err), err.stage, err.participants, err.nonfinite, err.too_few_holders)


@dataclasses.dataclass(frozen=True)
class SecureSettings:
  """What the secure transport needs besides the round's setup."""

  bits: int
  clip: float
  max_weight: float
  high_bits: int = 0  # `clip.upload=planes`: bits of the high plane (0: padded, one instance)


def upload_vectors(rule: str, secure: bool) -> int:
  """Fixed-size vectors each client uploads: 2 for participation-weighted SecAgg, else 1."""
  return 2 if (secure and rule == "participation_weighted") else 1


class Accumulator:
  """One round's aggregation, fed chunk by chunk (see the module docstring)."""

  def add(self, rows: np.ndarray, deltas: PyTree, param_masks: PyTree | None = None) -> None:
    """Adds the clients `rows` (indices into the round's weights): deltas params-shaped with
    a leading axis len(rows), param_masks alike (0/1; `participation_weighted` needs them)."""
    raise NotImplementedError

  def finish(self) -> Aggregated:
    raise NotImplementedError


class _PlainAccumulator(Accumulator):
  """In the clear: a single chunk is averaged exactly as one-shot; more chunks are summed."""

  def __init__(self, weights, participation, mean_fn, sums_fn, processes, mine, zeros):
    self._processes = processes
    self._zeros = zeros  # params-shaped zeros: the sums of a process without clients
    self._mine = np.zeros(len(weights), bool)
    self._mine[mine] = True
    self._weights = np.asarray(weights, np.float32)
    self._participation = participation
    self._mean_fn, self._sums_fn = mean_fn, sums_fn
    self._first = None   # (rows, deltas, masks) of the first chunk, kept until a second comes
    self._sums = None    # (numerator tree, denominator tree or scalar)
    self._seen = np.zeros(len(self._weights), bool)

  def add(self, rows, deltas, param_masks=None):
    rows = np.asarray(rows)
    if self._seen[rows].any():
      raise ValueError(f"clients {rows[self._seen[rows]].tolist()} were added twice")
    self._seen[rows] = True
    if self._participation and param_masks is None:
      raise ValueError("participation_weighted aggregation needs the parameter masks")
    if self._first is None and self._sums is None:
      self._first = (rows, deltas, param_masks)
      return
    if self._first is not None:
      self._sums = self._chunk_sums(*self._first)
      self._first = None
    self._sums = jax.tree.map(jnp.add, self._sums, self._chunk_sums(rows, deltas, param_masks))

  def _chunk_sums(self, rows, deltas, param_masks):
    return self._sums_fn(deltas, jnp.asarray(self._weights[rows]), param_masks)

  def finish(self):
    if not self._seen[self._mine].all():
      raise ValueError(f"clients {np.flatnonzero(~self._seen & self._mine).tolist()} were "
                       "never added")
    if self._processes.count > 1:  # partial sums of every process, added in process order
      if self._first is not None:
        self._sums = self._chunk_sums(*self._first)
      elif self._sums is None:  # this process had no clients this round
        self._sums = (self._zeros, self._zeros if self._participation else jnp.zeros(()))
      parts = self._processes.allgather(jax.device_get(self._sums))
      self._sums = jax.tree.map(lambda *a: sum(a[1:], a[0]), *parts)
      self._first = None
    if self._first is not None:
      rows, deltas, masks = self._first
      args = (deltas, jnp.asarray(self._weights[rows]))
      args += (masks,) if self._participation else ()
      return Aggregated(self._mean_fn(*args), np.ones(len(self._weights), bool), None)
    num, den = self._sums
    if self._participation:
      mean = jax.tree.map(lambda n, d: jnp.where(d > 0, n / jnp.where(d > 0, d, 1.0), 0.0),
                          num, den)
    else:
      mean = jax.tree.map(lambda n: n / jnp.maximum(den, 1e-12), num)
    return Aggregated(mean, np.ones(len(self._weights), bool), None)


def _plain_sums(participation: bool):
  """Jitted chunk sums: (sum_k w_k d_k, sum_k w_k) or, participation-weighted, (sum_k w_k d_k,
  sum_k w_k m_k) per coordinate."""

  def sums(deltas, weights, param_masks):
    num = jax.tree.map(lambda d: jnp.tensordot(weights.astype(d.dtype), d, axes=1), deltas)
    if participation:
      den = jax.tree.map(lambda d, m: jnp.tensordot(weights.astype(d.dtype), m.astype(d.dtype),
                                                    axes=1), deltas, param_masks)
    else:
      den = jnp.sum(weights)
    return num, den

  return jax.jit(sums)


class _SecureAccumulator(Accumulator):
  """SecAgg: each chunk's masked inputs are summed into the stream; `finish` unmasks.

  A `RoundAborted` while the stream starts (ShareKeys) is kept and raised by `finish`, after
  every client has trained, as the one-shot path did. With several processes the stream lives
  on process 0 (see the module docstring).
  """

  def __init__(self, weights, setup, secure, participation, num_params, unravel, ravel_fn,
               processes, layout, low=None):
    self._participation = participation
    self._num_params, self._unravel, self._ravel = num_params, unravel, ravel_fn
    self._secure, self._processes = secure, processes
    self._error = None
    self._stream = None
    self._partial = None
    dim = num_params * (2 if participation else 1)
    keys = {}
    if secure.high_bits and (participation or processes.count > 1):
      raise ValueError("clip.upload='planes' runs with the padded aggregation rule in one "
                       "process; use clip.upload='padded' for participation-weighted or "
                       "multi-process runs")
    if secure.high_bits and low is None:
      raise ValueError("clip.upload='planes' needs the round's low instance: pass begin(..., "
                       "low=(plane_sum.low_setup(...), members))")
    if processes.is_lead:
      try:
        if secure.high_bits:  # two instances: the high plane over all, the low over `low`
          low_setup, members = low
          self._stream = plane_sum.PlaneSumStream(
              setup, low_setup, members, np.asarray(weights), max_weight=secure.max_weight,
              dim=dim, bits=secure.bits, high_bits=secure.high_bits, clip=secure.clip)
        else:
          self._stream = secagg.SecureSumStream(setup, np.asarray(weights),
                                                max_weight=secure.max_weight, dim=dim,
                                                bits=secure.bits, clip=secure.clip)
      except secagg.RoundAborted as e:
        self._error = _abort_info(e)
      if self._error is None and processes.count > 1:
        keys = {p: [self._stream.client_keys(rows) for rows in chunks]
                for p, chunks in enumerate(layout) if p != processes.index}
    if processes.count > 1:  # each process gets its own clients' keys, and no one else's
      self._error = processes.broadcast(self._error)
      mine = processes.scatter(keys if processes.is_lead else None)
      if not processes.is_lead:
        self._keys = {tuple(k.ids.tolist()): k for k in mine or []}
        self._partial = (np.zeros(dim + 1, np.uint32), [], [])

  @property
  def low_running(self) -> bool:
    """`clip.upload=planes`: the low instance went through ShareKeys (its members send)."""
    return self._error is None and bool(getattr(self._stream, "low_running", False))

  def add(self, rows, deltas, param_masks=None):
    if self._error is not None:
      return
    flat = self._ravel(deltas)
    if self._participation:
      if param_masks is None:
        raise ValueError("participation_weighted aggregation needs the parameter masks")
      flat = jnp.concatenate([flat, self._ravel(param_masks)], axis=1)
    if self._stream is not None:
      self._stream.add(np.asarray(rows), flat)
      return
    total, senders, nonfinite = secagg.masked_partial(
        self._keys[tuple(np.asarray(rows).tolist())], flat, clip=self._secure.clip,
        bits=self._secure.bits)
    self._partial = (self._partial[0] + total, self._partial[1] + list(senders),
                     self._partial[2] + list(nonfinite))

  def finish(self):
    outcome, low_survivors = None, None
    if self._processes.count > 1:
      parts = self._processes.allgather(self._partial)
      if self._stream is not None and self._error is None:
        for part in parts[1:]:
          self._stream.add_partial(*part)
    if self._stream is not None and self._error is None:
      try:
        result = self._stream.finish()
        outcome = (np.asarray(result.total), float(result.weight_total),
                   np.asarray(result.survivors, bool), secagg_report(result))
        low_survivors = getattr(result, "low_survivors", None)
      except secagg.RoundAborted as e:
        self._error = _abort_info(e)
    if self._processes.count > 1:
      self._error, outcome = self._processes.broadcast((self._error, outcome))
    if self._error is not None:
      raise secagg.RoundAborted(self._error[0], *self._error[1:])
    total, weight_total, survivors, report = outcome
    total = jnp.asarray(total)
    if self._participation:  # each coordinate over the (weighted) clients that trained it
      num, den = total[:self._num_params], total[self._num_params:]
      mean_flat = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
    else:
      mean_flat = total / max(weight_total, 1e-12)
    mean = self._unravel(mean_flat.astype(jnp.float32))
    lead_result = result if self._stream is not None else None
    return Aggregated(mean, survivors, lead_result, report,
                      low_survivors if self._secure.high_bits else None)


class Aggregator:
  """A round's aggregation: `begin(weights, setup) -> Accumulator`, or one-shot `__call__`."""

  def __init__(self, rule: str, params: PyTree, secure: SecureSettings | None):
    self.rule, self.secure = rule, secure
    participation = rule == "participation_weighted"
    self._participation = participation
    if secure is None:
      self._mean_fn = jax.jit(server_lib.participation_mean if participation
                              else server_lib.weighted_mean)
      self._sums_fn = _plain_sums(participation)
      self._zeros = jax.tree.map(jnp.zeros_like, params)
    else:
      _, self._unravel = ravel_pytree(params)
      self._num_params = models.num_params(params)
      self._ravel = jax.jit(jax.vmap(lambda t: ravel_pytree(t)[0]))

  def begin(self, weights, setup=None, processes=multihost.SINGLE,
            layout=None, low=None) -> Accumulator:
    """A new round over clients with `weights` (f32[C], examples) and SecAgg `setup`.

    With several `processes` (a collective): `layout[p]` lists the row chunks process p adds.
    `low`: under `clip.upload=planes` (`secure.high_bits`), the low instance's
    (`plane_sum.low_setup` result, cohort ids of its members).
    """
    if layout is None:
      layout = [[np.arange(len(weights))]]
    mine = np.concatenate(layout[processes.index]) if layout[processes.index] else []
    if self.secure is None:
      return _PlainAccumulator(weights, self._participation, self._mean_fn, self._sums_fn,
                               processes, mine, self._zeros)
    return _SecureAccumulator(weights, setup, self.secure, self._participation,
                              self._num_params, self._unravel, self._ravel, processes, layout,
                              low)

  def __call__(self, deltas, weights, param_masks=None, setup=None) -> Aggregated:
    acc = self.begin(weights, setup)
    acc.add(np.arange(len(weights)), deltas, param_masks)
    return acc.finish()


def make_aggregator(rule: str, params: PyTree, secure: SecureSettings | None) -> Aggregator:
  """Builds the aggregation of a run.

  Args:
    rule: one of `AGGREGATIONS`.
    params: a params pytree (shapes only; fixes the flattening).
    secure: SecAgg settings, or None for the plain (in-the-clear) transport.

  Returns:
    An `Aggregator`: `begin(weights, setup)` starts a round fed chunk by chunk;
    `aggregator(deltas, weights, param_masks, setup) -> Aggregated` aggregates in one call
    (deltas params-shaped with a leading client axis C, weights f32[C] examples, param_masks
    the same shape as deltas, 0/1, required by `participation_weighted`; setup the round's
    SecAgg setup, secure only).

  Raises:
    ValueError: for an unknown rule.
  """
  if rule not in AGGREGATIONS:
    raise ValueError(f"aggregation rule {rule!r} is unknown; choose one of {AGGREGATIONS}.")
  return Aggregator(rule, params, secure)
