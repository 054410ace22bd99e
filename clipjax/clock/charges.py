"""The virtual clock of a run: what each client really did -> seconds (DESIGN 2.1).

Two steps, both host-side NumPy:

1. `charges(...)` says what ONE round asks of each client under a given protocol: bytes down
   and up, protocol messages (each costs one latency), and SecAgg mask words to expand. A
   client is charged only for the steps it takes part in:

   | step                              | messages | who                                   |
   |-----------------------------------|----------|---------------------------------------|
   | download the global model         | 1        | everybody                             |
   | upload the update / masked input  | 1        | everybody                             |
   | SecAgg AdvertiseKeys, ShareKeys,  | 3        | SecAgg runs (Bonawitz et al. 2017;    |
   |   Unmasking                       |          |  the masked input is the upload)      |
   | AdvertiseKeys for the broadcast   | 1        | broadcasting methods without SecAgg   |
   | sealed time broadcast (relayed)   | 1        | broadcasting methods, rounds >= 2     |
   |                                   |          |  (`clip.straggler_info=neighbours`,   |
   |                                   |          |  `clip.broadcast=own_message`; with   |
   |                                   |          |  `share_keys` the reports ride inside |
   |                                   |          |  ShareKeys: their bytes, no message)  |

   Bytes: under SecAgg the upload is the full fixed-size vector (D + 1 words, twice with
   participation-weighted aggregation) whatever was pruned; in the clear a client uploads
   only the coordinates it trained, and a method whose server prunes (`fluid`) sends each
   straggler only its sub-model. Broadcast ciphertexts count both ways. With
   `clip.straggler_info=histogram` the SecAgg input carries 2 x bins more words (uploaded and
   masked) and the download the summed histograms. With `clip.upload=planes` (issue 26,
   `PlaneCharges`) a client uploads its high bit plane packed at that instance's ring bits,
   and its low plane only if it is not a network straggler. SecAgg's key and share messages
   (tens of bytes per neighbour) are charged their latency, not their bytes: below 0.1 % of
   the vector for every model here.

2. `ClockModel.times(round, charges)` turns them into per-client seconds: fit from the kept
   sub-network's analytic FLOPs (`clipjax.models.flops`, checked against XLA's cost
   analysis in the tests) x the client's real examples and epochs; SecAgg mask expansion as
   ChaCha20 work, one keystream word per coordinate per pseudo-random stream (self mask +
   one per graph neighbour). `CHACHA_OPS_PER_WORD` = 64 counts the RFC 8439 block function's
   integer operations per output word: 10 double rounds of 8 quarter rounds, 12
   add/xor/rotate operations per quarter round over 4 words (6 per word per double round,
   60 in all), the final state addition and the masking add, rounded up for rotations that
   take two instructions without a rotate unit.

The round time is `devices.round_time`: the slowest surviving client's total plus the server's
seconds, so it can be recomputed from the per-client components in `metrics.jsonl`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax
import numpy as np

from clipjax.clock import devices
from clipjax.models import ModelDef, flops
from clipjax.secagg import planes as planes_lib

CHACHA_OPS_PER_WORD = 64
WORD_BYTES = 4
BASE_MESSAGES = 2            # download the model, upload the update
SECAGG_EXTRA_MESSAGES = 3    # AdvertiseKeys, ShareKeys, Unmasking
KEY_AGREEMENT_MESSAGES = 1   # AdvertiseKeys, when only the broadcast needs pairwise keys
BROADCAST_MESSAGES = 1       # the relayed, sealed time reports


@dataclasses.dataclass(frozen=True)
class PlaneCharges:
  """What `clip.upload=planes` changes in one round's upload (issue 26).

  Attributes:
    high_ring, low_ring: bits of each instance's ring (`secagg.planes.ring_bits`).
    low: bool[C] clients in the low instance (they send the low plane too).
    low_streams: int[C] their low-instance streams (1 + neighbours there; 0 elsewhere).
    full_low_ring: the low ring were every client in it (a report's full-precision time;
      default `low_ring`).
    histogram_words: time-histogram words in the high plane (`RoundCharger.histogram_words`).
  """

  high_ring: int
  low_ring: int
  low: np.ndarray
  low_streams: np.ndarray
  full_low_ring: int | None = None
  histogram_words: int = 0

  def upload_bytes(self, num_params: int) -> np.ndarray:
    """f64[C] bytes each client uploads: its high plane, and its low plane if it sends one."""
    high = planes_lib.wire_bytes(num_params, self.high_ring, 1 + self.histogram_words)
    low = planes_lib.wire_bytes(num_params, self.low_ring)
    return high + np.where(np.asarray(self.low, bool), float(low), 0.0)

  def low_mask_words(self, num_params: int) -> np.ndarray:
    """f64[C] keystream words of the low instance's masks (D + 1 per stream)."""
    return np.asarray(self.low_streams, np.float64) * (num_params + 1)

  def without_low(self) -> "PlaneCharges":
    """The same round with no low plane sent (the low instance stopped before its masked
    inputs)."""
    none = np.zeros_like(np.asarray(self.low, bool))
    return dataclasses.replace(self, low=none, low_streams=np.zeros_like(self.low_streams))

  def full_precision_net(self, times: devices.ClientTimes, charge: "Charges",
                         num_params: int) -> np.ndarray:
    """f64[C] `times.report_net` as if every client had sent both planes: a client that sent
    only the high plane adds the seconds its low plane would have taken on its own link (its
    upload seconds per byte) and its masks (about its high instance's: D + 1 words a stream).
    A time report ranks clients at full precision, as `fit_full` ranks them at full width."""
    skipped = ~np.asarray(self.low, bool)
    per_byte = times.upload / np.maximum(charge.upload_bytes, 1.0)
    ring = self.low_ring if self.full_low_ring is None else self.full_low_ring
    upload = per_byte * planes_lib.wire_bytes(num_params, ring)
    masks = times.blinding * (num_params + 1) / (num_params + 1 + self.histogram_words)
    return times.report_net + np.where(skipped, upload + masks, 0.0)


@dataclasses.dataclass(frozen=True)
class Charges:
  """What each client takes part in during one round, [C] arrays (host)."""

  kept_units: dict            # {layer: int[C]} units each client trained
  download_bytes: np.ndarray
  upload_bytes: np.ndarray
  messages: np.ndarray        # protocol steps, one latency each
  mask_words: np.ndarray      # SecAgg keystream words expanded


def charges(*, kept_units: Mapping[str, np.ndarray], kept_params: np.ndarray, num_params: int,
            secure: bool, upload_vectors: int = 1, prg_streams=0, broadcast: bool = False,
            broadcast_bytes_sent=0, broadcast_bytes_received=0,
            server_prunes: bool = False, reference_download: bool = False,
            histogram_words: int = 0, broadcast_message: bool = True,
            planes: "PlaneCharges | None" = None) -> Charges:
  """Charges of one round (see the module docstring's table).

  Args:
    kept_units: {layer: int[C]} units each client kept.
    kept_params: int[C] parameters each client trained (D for an unpruned client).
    num_params: D, parameters of the full model.
    secure: the update goes through SecAgg(+).
    upload_vectors: 2 with participation-weighted SecAgg (delta and its mask), else 1.
    prg_streams: int[C] or scalar, SecAgg streams per client (1 + graph neighbours).
    broadcast: the sealed time broadcast runs this round.
    broadcast_bytes_sent, broadcast_bytes_received: int[C] or scalar ciphertext bytes.
    server_prunes: the server sends each client its sub-model (in the clear only).
    reference_download: the server also sends w(t-1) (CLIP's `clip.reference=server`): a
      second full-model download.
    broadcast_message: the broadcast is a message of its own (`clip.broadcast=own_message`);
      False: its bytes ride inside SecAgg's ShareKeys (`share_keys`, secure runs only).
    histogram_words: coordinates of the time histograms (`clip.straggler_info=histogram`):
      appended to the SecAgg input (uploaded and masked like it) and sent back, summed, with
      the model.
    planes: `clip.upload=planes` (issue 26): the upload is the high plane (D words packed at
      its ring's bits, the weight word and any histogram words whole) and, for the low
      instance's members, the low plane (D words at its ring's bits, its zero weight word
      not sent); mask words are charged per instance (D + 1 each, as the simulation expands
      them). None: the padded vector.

  Raises:
    ValueError: for a negative or non-integer count, or upload_vectors not 1 or 2.
  """
  kept_params = np.asarray(kept_params, np.float64)
  num = kept_params.shape[0]
  if upload_vectors not in (1, 2):
    raise ValueError(f"upload_vectors must be 1 or 2, got {upload_vectors!r}")
  if np.any(kept_params < 0) or np.any(kept_params > num_params):
    raise ValueError(f"kept_params must lie in [0, num_params={num_params}]")
  full = np.full(num, float(num_params))
  if histogram_words and not secure:
    raise ValueError("histogram_words ride in the SecAgg input: they need secure=True")
  if planes is not None and (not secure or upload_vectors != 1):
    raise ValueError("planes split a SecAgg upload of one vector: they need secure=True and "
                     "upload_vectors=1")
  if planes is not None and planes.histogram_words != histogram_words:
    raise ValueError(f"planes.histogram_words={planes.histogram_words} differs from "
                     f"histogram_words={histogram_words}: build the PlaneCharges with the "
                     "round's histogram words")
  if secure:
    upload = WORD_BYTES * ((full + 1) * upload_vectors + histogram_words)
    download = WORD_BYTES * (full + histogram_words)
    messages = BASE_MESSAGES + SECAGG_EXTRA_MESSAGES
    mask_words = np.broadcast_to(np.asarray(prg_streams, np.float64), (num,)) * (
        (num_params + 1) * upload_vectors + histogram_words)
    if planes is not None:
      upload = planes.upload_bytes(num_params)
      mask_words = mask_words + planes.low_mask_words(num_params)
  else:
    upload = WORD_BYTES * (kept_params + 1)  # the trained coordinates and the weight
    download = WORD_BYTES * (kept_params if server_prunes else full)
    messages = BASE_MESSAGES + (KEY_AGREEMENT_MESSAGES if broadcast else 0)
    mask_words = np.zeros(num)
  if reference_download:
    download = download + WORD_BYTES * full
  if broadcast and not broadcast_message and not secure:
    raise ValueError("a broadcast inside ShareKeys needs SecAgg (secure=True)")
  if broadcast:
    messages += BROADCAST_MESSAGES if broadcast_message else 0
    upload = upload + np.asarray(broadcast_bytes_sent, np.float64)
    download = download + np.asarray(broadcast_bytes_received, np.float64)
  return Charges(kept_units={k: np.asarray(v) for k, v in kept_units.items()},
                 download_bytes=np.broadcast_to(download, (num,)).astype(np.float64),
                 upload_bytes=np.broadcast_to(upload, (num,)).astype(np.float64),
                 messages=np.full(num, messages, np.int64),
                 mask_words=np.asarray(mask_words, np.float64))


@dataclasses.dataclass(frozen=True)
class RoundCharger:
  """`charges` with a run's fixed protocol choices bound, for the round's stages.

  Attributes:
    secagg_on: the updates go through SecAgg(+).
    upload_vectors: 2 with participation-weighted SecAgg, else 1
      (`clipjax.fl.aggregation.upload_vectors`).
    server_prunes: the method's server sends stragglers their sub-models (`fluid`).
    histogram_words: time-histogram coordinates in every SecAgg input (0: none).
    reports_in_share_keys: time reports ride inside ShareKeys (no message of their own).
  """

  secagg_on: bool
  upload_vectors: int
  server_prunes: bool
  histogram_words: int = 0
  reports_in_share_keys: bool = False

  def __call__(self, kept_units: Mapping[str, np.ndarray], kept_params: np.ndarray,
               num_params: int, setup, broadcasting: bool, relay_bytes=(0, 0),
               reference: bool = False, planes: PlaneCharges | None = None) -> "Charges":
    """One round's charges for the cohort; `setup` is its key agreement (its graph sets the
    SecAgg streams per client: 1 + neighbours) or None; `planes` the bit-plane upload's
    (`clip.upload=planes`) or None."""
    num = len(np.asarray(kept_params))
    streams = (np.asarray([1 + len(setup.neighbours(u)) for u in range(num)])
               if (self.secagg_on and setup is not None) else 0)
    sent, received = relay_bytes
    return charges(kept_units=kept_units, kept_params=kept_params, num_params=num_params,
                   secure=self.secagg_on, upload_vectors=self.upload_vectors, prg_streams=streams,
                   broadcast=broadcasting, broadcast_bytes_sent=sent,
                   broadcast_bytes_received=received, server_prunes=self.server_prunes,
                   reference_download=reference, histogram_words=self.histogram_words,
                   broadcast_message=not self.reports_in_share_keys, planes=planes)


@dataclasses.dataclass(frozen=True)
class ClockModel:
  """Everything the clock needs that does not change across rounds.

  Attributes:
    population: the clients' devices.
    flops_per_example: kept widths {layer: n} -> training FLOPs of one example, one epoch
      (forward + backward); `for_model` uses the model's analytic FLOPs.
    full_widths: {layer: n} of the full model.
    num_examples: int[C] real (unpadded) training examples per client.
    epochs: local epochs.
    seed, jitter_sigma: the per-round log-normal jitter (DESIGN 2.1).
  """

  population: devices.Population
  flops_per_example: Callable[[dict], float]
  full_widths: dict
  num_examples: np.ndarray
  epochs: int
  seed: int
  jitter_sigma: float

  def __post_init__(self):
    object.__setattr__(self, "_cache", {})

  @classmethod
  def for_model(cls, model: ModelDef, **kwargs) -> "ClockModel":
    return cls(flops_per_example=lambda kept: float(flops.train_flops(model, kept, 1, 1)),
               full_widths=model.width_dict, **kwargs)

  def _flops(self, kept: dict) -> float:
    key = tuple(sorted(kept.items()))
    if key not in self._cache:
      self._cache[key] = float(self.flops_per_example(dict(kept)))
    return self._cache[key]

  def client_flops(self, kept_units: Mapping[str, np.ndarray],
                   ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(executed, full-model) training FLOPs of the clients `ids` (default all), from their
    kept unit counts (in the order of `ids`)."""
    examples = np.asarray(self.num_examples, np.float64)
    scale = (examples if ids is None else examples[ids]) * self.epochs
    executed = np.array([
        self._flops({k: int(v[c]) for k, v in kept_units.items()}) for c in range(len(scale))])
    return executed * scale, self._flops(self.full_widths) * scale

  def times(self, round_index: int, charge: Charges,
            ids: np.ndarray | None = None) -> devices.ClientTimes:
    """Per-client time components of one round of the population clients `ids` (default all).

    A client's jitter depends on (seed, round, population id) only, so a cohort's clients get
    the times they would get in a round of the whole population.
    """
    executed, full = self.client_flops(charge.kept_units, ids)
    profile = self.population.profile
    num = profile.num_clients
    jitter = None
    if self.jitter_sigma > 0:
      jitter = devices.round_jitter(self.seed, round_index, num, sigma=self.jitter_sigma)
      if ids is not None:
        jitter = jax.tree.map(lambda a: np.asarray(a)[ids], jitter)
    if ids is not None:
      profile = jax.tree.map(lambda a: np.asarray(a)[ids], profile)
    return devices.client_times(
        profile, fit_flops=executed, full_fit_flops=full,
        upload_bytes=charge.upload_bytes, download_bytes=charge.download_bytes,
        mask_expansion_flops=charge.mask_words * CHACHA_OPS_PER_WORD,
        protocol_messages=charge.messages, jitter=jitter)


# The per-client clock fields of a `metrics.jsonl` row (`metrics_fields`, in this order): each
# time field with the `devices.ClientTimes` component it holds, whose sum is the client's time
# (`round_time.recompute_round_time`), then its protocol messages and its total.
TIME_FIELDS = {"download_s": "download", "fit_s": "fit", "mask_s": "blinding",
               "upload_s": "upload", "latency_s": "latency"}
CLOCK_FIELDS = (*TIME_FIELDS, "messages", "client_time_s")


def metrics_fields(times: devices.ClientTimes, charge: Charges) -> dict:
  """Per-client components for `metrics.jsonl` (`CLOCK_FIELDS`): enough to recompute the
  round time.

  Rounded to 1e-9 s so recomputation agrees with the logged round time to ~1e-8 s.
  """
  r = lambda a: np.round(np.asarray(a, np.float64), 9).tolist()  # noqa: E731
  return {**{field: r(getattr(times, part)) for field, part in TIME_FIELDS.items()},
          "messages": np.asarray(charge.messages).tolist(), "client_time_s": r(times.total)}
