"""Client devices and the virtual clock: who is slow, and how long a round takes.

Host-side NumPy (cheap, float64), pure functions of their arguments. A client's time in a round
is download + fit + mask expansion + upload + per-message latency (DESIGN 2.1); the round takes as
long as its slowest surviving client plus the server's own time.

Default tiers and where they come from (every number is overridable through `Tiers`):

* Compute, `fast` = R = 10 GFLOP/s of sustained training throughput, `slow` = 2/3 R. The paper
  contrasts 3 GHz and 2 GHz CPUs, so only the 3:2 ratio is from the paper. R is our estimate for
  a mobile-class CPU core at 3 GHz: two 128-bit FMA pipes give 3e9 x 2 pipes x 4 fp32 lanes x
  2 FLOP = 48 GFLOP/s peak, and framework training of small CNNs/LSTMs on CPU sustains roughly
  20 % of peak (small batches, im2col and memory traffic), i.e. about 10 GFLOP/s. It is an
  order-of-magnitude assumption, not a measurement; it sets the compute/network balance.
* Network `4g`: uplink 27 Mbit/s (DESIGN 2.1 / the paper's setting); downlink 56 Mbit/s, from
  the Cellsmart/SmartCIC 2022 engineer survey (5G download 241.61 Mbit/s, reported as 330 %
  above the 4G average, so 4G is about 241.61 / 4.3); latency 50 ms per protocol message, inside
  the 44-66 ms range Opensignal measured on US 4G in Q1 2019.
* Network `5g`: downlink 241.61 Mbit/s (same survey); uplink 27 x 1.55 = 41.85 Mbit/s, scaling
  DESIGN's 4G uplink by the survey's "5G upload 55 % above 4G". Absolute measured 5G uplink
  medians (Ookla, Q3 2021: 21 Mbit/s) are below DESIGN's 4G figure, so we keep the measured
  5G/4G ratio rather than an absolute 5G number. Latency 30 ms: non-standalone sub-6 GHz 5G
  shows little latency gain over 4G in public measurements, far from the 1-10 ms of the spec.

References:
  DiMaggio, Saileshwar, Sharma. CLIP: Client-Side Invariant Pruning for Mitigating Stragglers in
  Secure Federated Learning. arXiv 2510.16694 (2025), evaluation setup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import flax.struct
import numpy as np

FAST_FLOPS_PER_S = 10e9
SLOW_FLOPS_PER_S = FAST_FLOPS_PER_S * 2.0 / 3.0
STRAGGLER_KINDS = ("compute", "network", "both")
# Distinct SeedSequence streams so population and jitter never share random numbers.
_POPULATION_STREAM = 0x504F50
_JITTER_STREAM = 0x4A4954


@dataclasses.dataclass(frozen=True)
class NetworkTier:
  """One network class: rates in bit/s, latency in seconds per protocol message."""

  uplink_bps: float
  downlink_bps: float
  latency_s: float


@dataclasses.dataclass(frozen=True)
class Tiers:
  """Named device tiers and which of them the slow/fast clients get."""

  compute: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"fast": FAST_FLOPS_PER_S, "slow": SLOW_FLOPS_PER_S})
  network: Mapping[str, NetworkTier] = dataclasses.field(
      default_factory=lambda: {
          "5g": NetworkTier(uplink_bps=41.85e6, downlink_bps=241.61e6, latency_s=0.030),
          "4g": NetworkTier(uplink_bps=27e6, downlink_bps=56.2e6, latency_s=0.050),
      })
  fast_compute: str = "fast"
  slow_compute: str = "slow"
  fast_network: str = "5g"
  slow_network: str = "4g"


@flax.struct.dataclass
class DeviceProfile:
  """Per-client device parameters, each of shape [C]."""

  flops_per_s: np.ndarray
  uplink_bps: np.ndarray
  downlink_bps: np.ndarray
  latency_s: np.ndarray

  @property
  def num_clients(self) -> int:
    return int(np.shape(self.flops_per_s)[0])


@flax.struct.dataclass
class Population:
  """Profiles plus who was made slow: `compute_slow`, `network_slow` are bool [C]."""

  profile: DeviceProfile
  compute_slow: np.ndarray
  network_slow: np.ndarray

  @property
  def straggler(self) -> np.ndarray:
    return self.compute_slow | self.network_slow


@flax.struct.dataclass
class Jitter:
  """Multiplicative per-client factors on compute times and on network times, [C] each."""

  compute: np.ndarray
  network: np.ndarray


@flax.struct.dataclass
class ClientTimes:
  """Per-client time components of one round, seconds, [C] each.

  `fit_full` is the fit time the client would have needed for the full model (what it reports
  to its peers, DESIGN 2.2); the other fields are what it actually spent.
  """

  download: np.ndarray
  fit: np.ndarray
  blinding: np.ndarray
  upload: np.ndarray
  latency: np.ndarray
  total: np.ndarray
  fit_full: np.ndarray

  @property
  def network(self) -> np.ndarray:
    """Download + upload + protocol latency."""
    return self.download + self.upload + self.latency

  @property
  def report_net(self) -> np.ndarray:
    """Everything pruning cannot shrink (network + mask expansion): the `net` of a time report.

    Reporting total - fit keeps T = fit_full + net equal to the client's real round time at
    full width, so the percentile rule of DESIGN 2.2 ranks clients by what the server waits for.
    """
    return self.total - self.fit


def _split_counts(total: int, kinds: Sequence[str]) -> dict[str, int]:
  base, extra = divmod(total, len(kinds))
  return {k: base + (1 if i < extra else 0) for i, k in enumerate(kinds)}


def make_population(
    num_clients: int,
    *,
    straggler_fraction: float = 0.2,
    kinds: Sequence[str] = ("compute",),
    counts: Mapping[str, int] | None = None,
    seed: int = 0,
    tiers: Tiers | None = None,
) -> Population:
  """Builds an explicit straggler population, chosen by seed.

  round(straggler_fraction * C) clients (half up) are stragglers, split evenly over `kinds`
  (remainder to the first kinds listed); `counts` instead gives the number per kind directly.
  `compute` stragglers get the slow compute tier, `network` ones the slow network tier, `both`
  get both; everybody else gets the fast tiers. Which clients is a seeded permutation.

  Args:
    num_clients: C >= 1.
    straggler_fraction: fraction in [0, 1); ignored when `counts` is given.
    kinds: non-empty subset of ("compute", "network", "both").
    counts: optional {kind: count}; counts must sum to at most C.
    seed: integer seed; the same seed gives the same population.
    tiers: device tiers (defaults in the module docstring).

  Returns:
    A `Population` with float64 profiles and bool `compute_slow`/`network_slow`.

  Raises:
    ValueError: for a bad client count, fraction, kind or count.
  """
  tiers = tiers or Tiers()
  if int(num_clients) != num_clients or num_clients < 1:
    raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
  if counts is None:
    if not 0.0 <= straggler_fraction < 1.0:
      raise ValueError(f"straggler_fraction must be in [0, 1), got {straggler_fraction!r}")
    kinds = tuple(kinds)
    if not kinds or len(set(kinds)) != len(kinds) or set(kinds) - set(STRAGGLER_KINDS):
      raise ValueError(f"kinds must be distinct values from {STRAGGLER_KINDS}, got {kinds!r}")
    counts = _split_counts(int(np.floor(straggler_fraction * num_clients + 0.5)), kinds)
  else:
    bad = {k: v for k, v in counts.items()
           if k not in STRAGGLER_KINDS or int(v) != v or v < 0}
    if bad:
      raise ValueError(f"counts must map {STRAGGLER_KINDS} to non-negative ints, got {bad!r}")
    if sum(counts.values()) > num_clients:
      raise ValueError(f"counts {dict(counts)!r} exceed num_clients={num_clients}")
  for name, table in ((tiers.fast_compute, tiers.compute), (tiers.slow_compute, tiers.compute),
                      (tiers.fast_network, tiers.network), (tiers.slow_network, tiers.network)):
    if name not in table:
      raise ValueError(f"tier {name!r} not in {sorted(table)}")

  rng = np.random.default_rng(np.random.SeedSequence([seed, _POPULATION_STREAM]))
  order = rng.permutation(num_clients)
  compute_slow = np.zeros(num_clients, bool)
  network_slow = np.zeros(num_clients, bool)
  start = 0
  for kind in STRAGGLER_KINDS:
    chosen = order[start:start + int(counts.get(kind, 0))]
    start += len(chosen)
    compute_slow[chosen] = kind in ("compute", "both")
    network_slow[chosen] = kind in ("network", "both")

  fast_net, slow_net = tiers.network[tiers.fast_network], tiers.network[tiers.slow_network]
  pick = lambda slow, a, b: np.where(slow, float(b), float(a))  # noqa: E731
  profile = DeviceProfile(
      flops_per_s=pick(compute_slow, tiers.compute[tiers.fast_compute],
                       tiers.compute[tiers.slow_compute]),
      uplink_bps=pick(network_slow, fast_net.uplink_bps, slow_net.uplink_bps),
      downlink_bps=pick(network_slow, fast_net.downlink_bps, slow_net.downlink_bps),
      latency_s=pick(network_slow, fast_net.latency_s, slow_net.latency_s))
  return Population(profile=profile, compute_slow=compute_slow, network_slow=network_slow)


def round_jitter(seed: int, round_index: int, num_clients: int, *, sigma: float = 0.05) -> Jitter:
  """Per-round log-normal jitter, a pure function of (seed, round).

  Each factor is exp(sigma * z), z ~ N(0, 1): median 1, log-standard-deviation sigma, drawn
  independently for the compute and the network time of every client.

  Raises:
    ValueError: if sigma < 0 or round_index < 0.
  """
  if not sigma >= 0.0:
    raise ValueError(f"jitter sigma must be >= 0, got {sigma!r}")
  if round_index < 0:
    raise ValueError(f"round_index must be >= 0, got {round_index!r}")
  rng = np.random.default_rng(np.random.SeedSequence([seed, _JITTER_STREAM, round_index]))
  z = rng.standard_normal((2, num_clients))
  return Jitter(compute=np.exp(sigma * z[0]), network=np.exp(sigma * z[1]))


def no_jitter(num_clients: int) -> Jitter:
  """Factors of exactly 1."""
  return Jitter(compute=np.ones(num_clients), network=np.ones(num_clients))


def client_times(
    profile: DeviceProfile,
    *,
    fit_flops,
    upload_bytes,
    download_bytes,
    mask_expansion_s=None,
    mask_expansion_flops=None,
    protocol_messages=0,
    full_fit_flops=None,
    jitter: Jitter | None = None,
) -> ClientTimes:
  """Per-client time components of one round (DESIGN 2.1).

  fit = fit_flops / flops_per_s x compute jitter; download/upload = 8 bytes / bit rate x network
  jitter; latency = protocol_messages x latency_s x network jitter. Mask expansion is either given
  in seconds (used as is) or as FLOPs (timed like fit). Upload bytes should be the full
  fixed-size SecAgg vector: pruning does not shrink it.

  Args:
    profile: the clients' devices, [C].
    fit_flops: training FLOPs actually executed, [C] or scalar.
    upload_bytes: bytes each client uploads, [C] or scalar.
    download_bytes: bytes each client downloads, [C] or scalar.
    mask_expansion_s: seconds of SecAgg mask expansion, [C] or scalar (exclusive with flops).
    mask_expansion_flops: FLOPs of SecAgg mask expansion, [C] or scalar.
    protocol_messages: protocol steps that each cost one latency, int scalar or [C].
    full_fit_flops: training FLOPs of the full model (for `fit_full`); defaults to fit_flops.
    jitter: this round's factors; None means no jitter.

  Returns:
    `ClientTimes`, float64 [C] each.

  Raises:
    ValueError: if both or negative mask inputs, negative sizes, or a shape mismatch.
  """
  c = profile.num_clients
  if mask_expansion_s is not None and mask_expansion_flops is not None:
    raise ValueError("give mask_expansion_s or mask_expansion_flops, not both")
  jitter = jitter or no_jitter(c)

  def per_client(name, value):
    arr = np.asarray(0.0 if value is None else value, np.float64)
    if arr.shape not in ((), (c,)):
      raise ValueError(f"{name} must be a scalar or shape [{c}], got shape {arr.shape}")
    arr = np.broadcast_to(arr, (c,))
    if np.any(arr < 0) or not np.all(np.isfinite(arr)):
      raise ValueError(f"{name} must be finite, >= 0, scalar or shape [{c}]")
    return arr

  messages = np.asarray(protocol_messages)
  if (messages.shape not in ((), (c,)) or np.any(messages < 0)
      or np.any(np.asarray(messages, np.int64) != messages)):
    raise ValueError(f"protocol_messages must be non-negative ints, scalar or shape [{c}], "
                     f"got {protocol_messages!r}")
  fit_flops = per_client("fit_flops", fit_flops)
  full = fit_flops if full_fit_flops is None else per_client("full_fit_flops", full_fit_flops)
  comp, net = np.asarray(jitter.compute), np.asarray(jitter.network)
  fit = fit_flops / profile.flops_per_s * comp
  if mask_expansion_flops is not None:
    blinding = per_client("mask_expansion_flops", mask_expansion_flops) / profile.flops_per_s * comp
  else:
    blinding = per_client("mask_expansion_s", mask_expansion_s)
  download = 8.0 * per_client("download_bytes", download_bytes) / profile.downlink_bps * net
  upload = 8.0 * per_client("upload_bytes", upload_bytes) / profile.uplink_bps * net
  latency = messages.astype(np.float64) * profile.latency_s * net
  return ClientTimes(download=download, fit=fit, blinding=blinding, upload=upload, latency=latency,
                     total=download + fit + blinding + upload + latency,
                     fit_full=full / profile.flops_per_s * comp)
