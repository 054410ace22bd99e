"""The server's seconds of a round (DESIGN 2.1, issue 24): the work it really does, on a tier.

The round lasts as its slowest surviving client plus the server's time. The server's time is
`devices.server_seconds` (a fixed cost, default 0) plus its work, counted in operations and
run at `devices.server_speedup` x the fast client tier's rate (default 10: a server that does
ten times the work per second of the fast client, e.g. a multi-core machine beside the
paper's 3 GHz client CPUs); `server_speedup=0` charges no work (the clock before issue 24).
Each part goes to `metrics.jsonl` as `server_s_parts`, in seconds:

  aggregate   one addition per uploaded word per surviving client (every method; under SecAgg
              the masked words, D + 1 per vector plus any histogram words).
  unmask_prg  SecAgg only: ChaCha20 expansion (`charges.CHACHA_OPS_PER_WORD` per word) of each
              survivor's self-mask and of the pairwise masks between every client that shared
              its keys and then dropped (U2 minus the survivors) and its surviving neighbours.
  shamir      SecAgg only: one Lagrange interpolation at 0 from t shares per reconstructed
              secret (each survivor's self-mask seed, each dropped sharer's mask key):
              t^2 products in GF(2^521 - 1), `SHAMIR_OPS_PER_PRODUCT` operations each, plus
              one X25519 key agreement (`X25519_OPS`) per pairwise seed a dropped client's
              rebuilt key gives.
  fluid       `fluid` only: its invariance test over every parameter of every voter's update
              (`FLUID_OPS_PER_PARAM`: |delta|, the division by |w|, the comparison, the count).

A round that aborts or is skipped is charged `devices.server_seconds` only (the server did
not unmask a sum). The constants are operation counts of the textbook algorithms (like the clients' FLOPs), not
measurements: a 521-bit product is 9 x 9 64-bit limb products plus the Mersenne reduction
(about 100 operations); an X25519 scalar multiplication is about 2^17 operations (255 ladder
steps of ~10 field products of 4 x 4 limbs and their reductions, rounded up).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from clipjax.clock.charges import CHACHA_OPS_PER_WORD, RoundCharger
from clipjax.secagg import stages

SHAMIR_OPS_PER_PRODUCT = 100
X25519_OPS = 1 << 17
FLUID_OPS_PER_PARAM = 4
DEFAULT_SPEEDUP = 10.0
PARTS = ("aggregate", "unmask_prg", "shamir", "fluid")


def unmasking_counts(neighbours: Sequence[Collection[int]], sharers: Collection[int],
                     survivors: Collection[int]) -> tuple[int, int]:
  """(secrets rebuilt, pairwise streams expanded) by the server's Unmasking.

  Args:
    neighbours: each client's graph neighbours.
    sharers: U2, the clients that shared their keys.
    survivors: U3, the clients whose masked input is in the sum.
  """
  survivors = set(survivors)
  dropped = [u for u in sharers if u not in survivors]
  streams = sum(sum(v in survivors for v in neighbours[u]) for u in dropped)
  return len(survivors) + len(dropped), int(streams)


def server_parts(*, survivors: int, words: int, secure: bool, threshold: int = 0,
                 secrets: int = 0, pair_streams: int = 0, fluid_voters: int = 0,
                 num_params: int = 0) -> dict[str, float]:
  """Operations of each part of one round's server work (module docstring).

  Args:
    survivors: clients whose upload is summed.
    words: words each of them uploads (all vectors).
    secure: the sum runs SecAgg (unmasking is charged).
    threshold: SecAgg's t (shares per reconstruction).
    secrets, pair_streams: `unmasking_counts`.
    fluid_voters: clients whose updates FLuID's server scores (0 for other methods).
    num_params: D, the model's parameters (FLuID's scoring).
  """
  parts = {"aggregate": float(survivors) * words, "unmask_prg": 0.0, "shamir": 0.0,
           "fluid": float(fluid_voters) * num_params * FLUID_OPS_PER_PARAM}
  if secure:
    parts["unmask_prg"] = float(survivors + pair_streams) * words * CHACHA_OPS_PER_WORD
    parts["shamir"] = (float(secrets) * threshold ** 2 * SHAMIR_OPS_PER_PRODUCT
                       + float(pair_streams) * X25519_OPS)
  return parts


def seconds(parts: dict[str, float], ops_per_s: float,
            fixed_s: float = 0.0) -> tuple[float, dict[str, float]]:
  """(server seconds, seconds of each part): `fixed_s` + each part's operations / `ops_per_s`.

  `ops_per_s` = 0 charges no work (only `fixed_s`).
  """
  if ops_per_s < 0 or not np.isfinite(ops_per_s):
    raise ValueError(f"server ops_per_s={ops_per_s!r} must be finite and >= 0 (0: no work "
                     "charged).")
  each = {k: (v / ops_per_s if ops_per_s else 0.0) for k, v in parts.items()}
  return float(fixed_s + sum(each.values())), each


def _unmasking(setup, survivors: np.ndarray) -> tuple[int, int]:
  """`unmasking_counts` of one SecAgg instance: `setup`'s graph and sharers (U2)."""
  candidates = set(setup.advertised) - set(setup.dropouts["share_keys"])
  neighbours = [setup.neighbours(u) for u in range(setup.num_clients)]
  return unmasking_counts(neighbours, stages.sharers(setup, candidates),
                          np.flatnonzero(survivors).tolist())


def work(charger: RoundCharger, kept_params: np.ndarray, num_params: int, setup,
         survivors: np.ndarray, fluid_voters: int = 0, low=None) -> dict[str, float]:
  """Operations of each part of a round's server work: it sums what the survivors uploaded
  (`charger`'s protocol: the SecAgg vector, else the kept coordinates and the weight) and,
  under SecAgg, unmasks with `setup`'s graph and sharers (U2, `secagg.stages.sharers`).
  `low`: `clip.upload=planes`' low instance, (its setup, bool[n_lo] its survivors) or None:
  the server sums and unmasks it too (D + 1 words a survivor)."""
  survivors = np.asarray(survivors, bool)
  secure = charger.secagg_on and setup is not None
  if not secure:
    parts = server_parts(survivors=int(survivors.sum()), words=0, secure=False,
                         fluid_voters=fluid_voters, num_params=num_params)
    kept = np.asarray(kept_params, np.float64)[survivors]
    parts["aggregate"] = float(np.sum(kept + 1)) * charger.upload_vectors
    return parts
  secrets, streams = _unmasking(setup, survivors)
  parts = server_parts(survivors=int(survivors.sum()),
                       words=(num_params + 1) * charger.upload_vectors + charger.histogram_words,
                       secure=True, threshold=setup.threshold, secrets=secrets,
                       pair_streams=streams, fluid_voters=fluid_voters, num_params=num_params)
  if low is not None and low[0] is not None:
    low_setup, low_survivors = low
    low_survivors = np.asarray(low_survivors, bool)
    secrets, streams = _unmasking(low_setup, low_survivors)
    second = server_parts(survivors=int(low_survivors.sum()), words=num_params + 1, secure=True,
                          threshold=low_setup.threshold, secrets=secrets, pair_streams=streams)
    parts = {k: parts[k] + second[k] for k in parts}
  return parts
