"""The virtual clock of a run: FLOPs each client really executed -> seconds (DESIGN 2.1).

Fit time comes from the kept sub-network's analytic FLOPs (`clipjax.models.flops`, checked
against XLA's cost analysis in the tests) times the client's real example count and
epochs; upload is the full fixed-size SecAgg vector whatever was pruned.

SecAgg mask expansion is costed as ChaCha20 work: one keystream word per coordinate per
pseudo-random stream (self mask + one per graph neighbour). `CHACHA_OPS_PER_WORD` = 64
counts the RFC 8439 block function's integer operations per output word: 10 double rounds
of 8 quarter rounds, 12 add/xor/rotate operations per quarter round over 4 words
(6 per word per double round, 60 in all), the final state addition, and the masking
add, rounded up for rotations that take two instructions without a rotate unit.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from clipjax.clip import devices
from clipjax.models import ModelDef, flops

CHACHA_OPS_PER_WORD = 64
WORD_BYTES = 4
# advertise keys, share keys, masked input, unmasking (Bonawitz et al. 2017), plus the
# relayed time broadcast of CLIP.
SECAGG_MESSAGES = 4
BROADCAST_MESSAGES = 1


@dataclasses.dataclass(frozen=True)
class ClockModel:
  """Everything the clock needs that does not change across rounds."""

  population: devices.Population
  model: ModelDef
  num_params: int
  num_examples: np.ndarray    # int[C], real (unpadded) training examples per client
  epochs: int
  seed: int
  jitter_sigma: float
  server_seconds: float
  secagg: bool
  upload_vectors: int = 1     # 2 with participation-weighted aggregation

  def __post_init__(self):
    object.__setattr__(self, "_cache", {})

  def train_flops(self, kept: dict[str, int], num_examples: int) -> float:
    key = tuple(sorted(kept.items()))
    if key not in self._cache:
      self._cache[key] = float(flops.train_flops(self.model, dict(kept), 1, 1))
    return self._cache[key] * num_examples * self.epochs

  def client_flops(self, kept_units: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(executed, full-model) training FLOPs per client from per-client kept unit counts."""
    num = len(self.num_examples)
    full = self.model.width_dict
    executed = np.array([
        self.train_flops({k: int(v[c]) for k, v in kept_units.items()}, int(self.num_examples[c]))
        for c in range(num)])
    full_flops = np.array([self.train_flops(full, int(n)) for n in self.num_examples])
    return executed, full_flops

  def times(self, round_index: int, kept_units: dict[str, np.ndarray],
            prg_streams: np.ndarray | int) -> devices.ClientTimes:
    """Per-client time components of one round."""
    executed, full = self.client_flops(kept_units)
    jitter = (devices.round_jitter(self.seed, round_index, len(executed), sigma=self.jitter_sigma)
              if self.jitter_sigma > 0 else None)
    vector_bytes = WORD_BYTES * (self.num_params + 1) * self.upload_vectors
    messages = SECAGG_MESSAGES + BROADCAST_MESSAGES if self.secagg else 2
    mask_flops = (np.asarray(prg_streams, np.float64) * (self.num_params + 1)
                  * self.upload_vectors * CHACHA_OPS_PER_WORD) if self.secagg else 0.0
    return devices.client_times(
        self.population.profile, fit_flops=executed, full_fit_flops=full,
        upload_bytes=vector_bytes, download_bytes=WORD_BYTES * self.num_params,
        mask_expansion_flops=mask_flops, protocol_messages=messages, jitter=jitter)
