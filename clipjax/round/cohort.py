"""Populations and cohorts (DESIGN 2.9): who takes part in a round, and what each client keeps.

A run has a population of K clients and samples a cohort of C of them per round, a pure function
of (seed, round); C = K is the paper's fixed participation. What a client carries from one of its
rounds to its next belongs to the population, indexed by population id:

* `Reports`: the times it measured in the last round it took part in, which it reports to its
  peers (DESIGN 2.2). A client that has never trained has nothing to report: it sends no report
  and keeps the whole model.
* `References`: the global models it received. CLIP scores invariance by comparing the model a
  client downloads now with the last *different* model it received before (DESIGN 2.4, 2.9): with
  full participation that is the server's w(t-1); a client that missed rounds compares against
  what it last saw; a client that has never received a model has no reference and scores every
  unit 0 (its invariant units are then a keyed random choice). An aborted round's model is the
  one the client already holds, so the reference does not move.

The global models still referenced by some client are kept on the host, flattened, keyed by the
server's version (its step count): at most min(rounds, K) + 1 of them, two with full
participation. Everything here is host code on NumPy arrays; it is checkpointed as such
(`clipjax.checkpoints`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

_COHORT_STREAM = 0xC0407  # separates the cohort draw from every other use of the seed


def sample_cohort(seed: int, round_index: int, population: int, cohort: int) -> np.ndarray:
  """Sorted population ids of round `round_index`'s cohort, a pure function of its arguments.

  Raises:
    ValueError: if `cohort` is not in [1, population].
  """
  if not 1 <= cohort <= population:
    raise ValueError(f"cohort_size={cohort} must be in [1, {population}] (the population).")
  if cohort == population:
    return np.arange(population)
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(round_index), _COHORT_STREAM])
  return np.sort(rng.choice(population, size=cohort, replace=False))


_AWAY_STREAM = 0xA3A7  # the per-round unavailability draw


def away(seed: int, round_index: int, ids: np.ndarray, rate: float) -> np.ndarray:
  """bool[len(ids)]: which of the cohort `ids` are unavailable in round `round_index` (churn).

  Each population client is away with probability `rate`, independently per round, a pure
  function of (seed, round, client id), so a client's availability does not depend on who
  else was sampled.
  """
  ids = np.asarray(ids)
  if rate <= 0:
    return np.zeros(len(ids), bool)
  rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(round_index), _AWAY_STREAM])
  draw = rng.random(int(ids.max()) + 1 if len(ids) else 0)
  return draw[ids] < rate


def choose(seed: int, round_index: int, population: int, cohort: int,
           unavailable_rate: float) -> tuple[np.ndarray, int | None]:
  """The round's cohort stage: (population ids taking part, how many sampled were away).

  The away count is None when churn is off (`unavailable_rate` 0).
  """
  ids = sample_cohort(seed, round_index, population, cohort)
  gone = away(seed, round_index, ids, unavailable_rate)
  return ids[~gone], (int(gone.sum()) if unavailable_rate > 0 else None)


@dataclasses.dataclass(frozen=True)
class Reports:
  """Each population client's last measured times, NaN where it has never trained.

  Attributes:
    fit_full: f64[K] full-model fit seconds of its last round.
    net: f64[K] the rest of its last round (`ClientTimes.report_net`).
    summed: bool[K] the client's times went into the last round's secure sum (it survived
      it): the clients the summed time histogram counts (`clip.straggler_info=histogram`).
  """

  fit_full: np.ndarray
  net: np.ndarray
  summed: np.ndarray

  @classmethod
  def empty(cls, population: int) -> "Reports":
    return cls(np.full(population, np.nan), np.full(population, np.nan),
               np.zeros(population, bool))

  def known(self, ids: np.ndarray) -> np.ndarray:
    return np.isfinite(self.fit_full[ids])

  def update(self, ids: np.ndarray, fit_full: np.ndarray, net: np.ndarray,
             summed: np.ndarray | None = None) -> "Reports":
    """The cohort `ids` measured these times; `summed`: bool[len(ids)] survivors of this
    round's secure sum (None: the round delivered no sum, e.g. it aborted)."""
    fit, rest = self.fit_full.copy(), self.net.copy()
    fit[ids], rest[ids] = fit_full, net
    in_sum = np.zeros(len(fit), bool)
    if summed is not None:
      in_sum[np.asarray(ids)[np.asarray(summed, bool)]] = True
    return Reports(fit, rest, in_sum)


@dataclasses.dataclass(frozen=True)
class References:
  """The global models each population client received.

  Attributes:
    held: int64[K] version of the last model the client received (-1: none).
    ref: int64[K] version of the model it received before that one (-1: none): its w(t-1).
    models: version -> float32[D] flattened global model, for every version in held or ref.
  """

  held: np.ndarray
  ref: np.ndarray
  models: dict

  @classmethod
  def empty(cls, population: int) -> "References":
    return cls(np.full(population, -1, np.int64), np.full(population, -1, np.int64), {})

  def download(self, ids: np.ndarray, version: int, flat_params: np.ndarray) -> "References":
    """The cohort `ids` receive the global model `version` (flattened `flat_params`)."""
    held, ref = self.held.copy(), self.ref.copy()
    moved = ids[held[ids] != version]
    ref[moved] = held[moved]
    held[ids] = version
    live = set(np.unique(held).tolist()) | set(np.unique(ref).tolist())
    models = {v: m for v, m in self.models.items() if v in live}
    if version not in models:
      models[version] = np.asarray(flat_params, np.float32).copy()
    return References(held, ref, models)


def reference_scores(scorer: Callable, params, refs: References, ids: np.ndarray,
                     version: int, *, prev_params=None) -> tuple[References, Any, int]:
  """The round's reference stage for CLIP: the cohort downloads w(t) and each client scores
  it against its reference (DESIGN 2.4, 2.9).

  Args:
    scorer: `(params, reference) -> scores` (`methods.make_scorer`).
    params: w(t).
    refs: the population's received models.
    ids: int[C] the cohort.
    version: w(t)'s version (the server's step count).
    prev_params: the server's w(t-1) when the server sends it (`clip.reference=server`):
      every client scores against it and `refs` does not change.

  Returns:
    (refs after the download, scores with a leading [C] axis, clients without a reference).
  """
  num = len(ids)
  if prev_params is not None:
    one = scorer(params, prev_params)
    return refs, jax.tree.map(lambda a: jnp.broadcast_to(a, (num,) + a.shape), one), 0
  flat, unravel = ravel_pytree(params)
  refs = refs.download(ids, version, np.asarray(flat))
  versions = refs.ref[ids]
  unique = np.unique(versions)
  per_version = [scorer(params, params if v < 0 else unravel(jnp.asarray(refs.models[v])))
                 for v in unique]
  index = jnp.asarray(np.searchsorted(unique, versions))
  scores = jax.tree.map(lambda *a: jnp.stack(a)[index], *per_version)
  return refs, scores, int(np.sum(versions < 0))
