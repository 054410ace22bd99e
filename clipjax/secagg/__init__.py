"""Secure aggregation (SecAgg, SecAgg+) with host crypto and jitted uint32 masking.

References:
  K. Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine Learning.
  CCS 2017.
  J. Bell et al. Secure Single-Server Aggregation with (Poly)Logarithmic Overhead. CCS 2020.
"""

from clipjax.secagg.aggregate import SecAggStats, SecureSumResult, secure_sum, secure_sum_tree
from clipjax.secagg.protocol import (STAGES, Dropouts, RoundAborted, RoundSetup, ServerTranscript,
                                     open_from_peer, seal_for_peer, setup_round)
from clipjax.secagg.quantize import check_bits, max_safe_bits

__all__ = [
    "STAGES", "Dropouts", "RoundAborted", "RoundSetup", "SecAggStats", "SecureSumResult",
    "ServerTranscript", "check_bits", "max_safe_bits", "open_from_peer", "seal_for_peer",
    "secure_sum", "secure_sum_tree", "setup_round",
]
