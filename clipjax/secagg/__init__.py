"""Secure aggregation (SecAgg, SecAgg+) with host crypto and jitted uint32 masking.

Threat model: what this simulation guarantees, and what it does not.

* Adversary: an honest-but-curious server that colludes with at most a fraction ``gamma``
  (``ThreatModel.corruption_fraction``, default 20%) of the clients, chosen before the round's
  graph is drawn (non-adaptive). Colluders follow the protocol and pool everything they hold with
  the server. The SecAgg+ graph comes from the nonces the advertised clients commit in
  AdvertiseKeys (:func:`clipjax.secagg.graph.committed_seed`), so it is unknown before then; a
  seeded simulation derives the nonces from its seed (reproducible, and so never a deployment's).
* The simulation plays every party: a :class:`SecureSumResult`'s ``setup`` holds every client's
  private keys. It is never sent between processes (``clipjax.fl.aggregation``).
* Guarantee: the server learns only the sum of the honest survivors' quantised inputs, except
  with probability ``P[leak] + P[split] <= 2^-sigma`` (default sigma = 40): no honest client has
  t colluding share holders, and the honest survivors stay connected in the masking graph. SecAgg
  (complete graph) holds this for any colluding set smaller than t; SecAgg+ (a randomly labelled
  Harary graph of degree k) holds it with that probability for colluding sets of at most
  ``floor(gamma n)`` clients, and for at most ``floor(delta n)`` drop-outs
  (``ThreatModel.dropout_fraction``). (k, t) come from :mod:`clipjax.secagg.params`, which
  computes these bounds exactly and reports them with ``P[abort] <= 2^-eta`` (default eta = 20)
  for rounds lost to drop-outs; weaker explicit choices need ``allow_weak=True``.
* Measured, defaults (20% colluders, 10% drop-outs): SecAgg+ chooses n = 10: k = 4, t = 3;
  n = 20: k = 8, t = 5; n = 50: k = 16, t = 11; n = 200: k = 44, t = 29 (P[leak] <= 5.0e-13,
  P[split] <= 5.8e-27, P[abort] <= 8.6e-8). The earlier unanalysed constants k = 2 ceil(log2 n),
  t = floor((k + 1) / 2) + 1 give P[leak] <= 3.2e-2 at n = 50 and 0.15 at n = 200.
* Key material (X25519 keys, self-mask seeds, Shamir coefficients, AES-GCM nonces) comes from
  the OS on every call; a seed drives only public or simulated choices (the simulated graph
  nonces, drop-outs, the stochastic rounding), and results stay reproducible because masks cancel exactly. For the same
  reason ``simulate="sum"`` (:mod:`clipjax.secagg.fast_sum`) can compute a round's exact result
  without keys or masks; it changes the simulator's work, not what a deployment reveals.
* Uploads that follow the link (``clip.upload=planes``, :mod:`clipjax.secagg.plane_sum`): two
  independent instances, each with its own keys, graph and (k, t) for its own n; the guarantee
  above holds for each, and the server also learns who joined the second (docs/secagg.md).
* Not covered: a malicious server (no signatures on the advertised keys and no consistency
  round, so a server that lies about who dropped out can ask for both kinds of shares of a
  client), malicious clients that send out-of-range or poisoned inputs (inputs are clipped and
  non-finite updates are dropped, nothing more), side channels, and differential privacy: the
  sum itself is revealed.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from clipjax.secagg.aggregate import MAX_DIM, SecAggStats, SecureSumResult, weight_codes
from clipjax.secagg.chunk_input import ChunkKeys, masked_partial
from clipjax.secagg.fast_sum import SimulationMismatch, check_same_fields
from clipjax.secagg.host_crypto import sealed_size
from clipjax.secagg.params import SecAggParameters, ThreatModel, choose_parameters, failure_bounds
from clipjax.secagg.protocol import (SIMULATE, SIMULATE_MODES, STAGES, Dropouts, RoundAborted,
                                     RoundSetup, ServerTranscript, open_from_peer,
                                     seal_for_peer, setup_round)
from clipjax.secagg.quantize import check_bits, max_safe_bits
from clipjax.secagg.stream import SecureSumStream, secure_sum, secure_sum_tree

__all__ = [
    "MAX_DIM", "SIMULATE", "SIMULATE_MODES", "STAGES", "ChunkKeys", "Dropouts", "RoundAborted",
    "RoundSetup", "SecAggParameters", "SecAggStats", "SecureSumResult", "SecureSumStream",
    "ServerTranscript", "SimulationMismatch", "ThreatModel", "check_bits", "check_same_fields",
    "choose_parameters", "failure_bounds", "masked_partial", "max_safe_bits", "open_from_peer",
    "seal_for_peer", "sealed_size", "secure_sum", "secure_sum_tree", "setup_round", "weight_codes",
]
