"""CLIP's client-side pieces: straggler self-identification, the sealed time broadcast, time
reports, keep fractions, and invariant-dropout prune masks (DESIGN 2.2-2.4). The devices and
the virtual clock are `clipjax.clock`.

References:
  DiMaggio, Saileshwar, Sharma. CLIP: Client-Side Invariant Pruning for Mitigating Stragglers in
  Secure Federated Learning. arXiv 2510.16694 (2025).
"""

from clipjax.clip.invariance import (
    DEFAULT_GROWTH,
    SLACK_ORDERS,
    THRESHOLD_INITS,
    InvarianceCounts,
    InvarianceState,
    drop_rank,
    init_state,
    kept_units,
    ordered_prune_mask,
    random_prune_mask,
    replicate_state,
    units_to_drop,
    update,
)
from clipjax.clip.keep import (
    DEFAULT_P_MIN,
    DEFAULT_RESOLUTION,
    METHODS,
    FlopTable,
    candidate_keep_fractions,
    default_rho_min,
    keep_fraction,
    keep_fraction_for_rho,
    keep_fraction_from_table,
    make_flop_table,
    target_rho,
)
from clipjax.clip.stragglers import (
    TIME_REPORT_BYTES,
    StragglerDecision,
    check_straggler_fraction,
    decode_time_report,
    encode_time_report,
    masked_quantile,
    straggler_decision,
)

__all__ = [name for name in dir() if not name.startswith("_")
           and name not in ("invariance", "keep", "stragglers")]
