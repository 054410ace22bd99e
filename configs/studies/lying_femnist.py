"""The lying-clients study (`configs/studies/lying.py`) on FEMNIST: LEAF CNN x0.25, 20 writers,
30 rounds, SecAgg+, every writer's test data (`configs/paper/femnist_cnn.py`, CPU size).

FEMNIST's rounds are network-bound here, so this grid shows the accuracy side of lying more
than its round-time side.

Command:
  python scripts/reproduce.py --config configs/studies/lying_femnist.py --root runs/studies

measured: 2026-12-03, 2-core development VM (no GPU), seeds 0, 1, 2, default calibration: 27 new `clip_network` runs in 42 min on both cores; the honest fedavg / clip_network runs are the FEMNIST paper sweep's `compute_network` runs with identical configs, copied. `clip_compute` was not run on FEMNIST.

  | liars | factor | quantile: round-time cut | quantile: acc delta, points [95% CI] | quantile: stragglers/round | plausible: round-time cut | plausible: acc delta, points [95% CI] | plausible: stragglers/round | plausible: reports dropped/round |
  |---|---|---|---|---|---|---|---|---|
  | 0 | 1 | +3.0% | -1.56 [-2.89, -0.23] | 4.36 | +3.0% | -1.56 [-2.89, -0.23] | 4.36 | 0.0 |
  | 0.1 | 0.1 | +3.0% | -1.50 [-2.57, -0.44] | 4.52 | +3.0% | -1.56 [-2.26, -0.87] | 4.52 | 15.5 |
  | 0.1 | 10 | +0.8% | -0.83 [-1.88, +0.21] | 2.42 | +3.0% | -1.56 [-2.26, -0.87] | 4.52 | 15.5 |
  | 0.3 | 0.1 | +3.0% | -1.81 [-2.35, -1.26] | 5.16 | +2.2% | -1.17 [-2.48, +0.14] | 3.50 | 46.4 |
  | 0.3 | 10 | -3.4% | -0.44 [-0.94, +0.06] | 0.36 | +2.2% | -1.17 [-2.48, +0.14] | 3.50 | 46.4 |

  Reference: fedavg (honest setting), mean round 1.198 virtual s, final accuracy 0.6778 [0.6422, 0.7134] (n=3); seeds 0,1,2. Cut: 1 - mean(method round s) / mean(fedavg round s); delta: final accuracy minus fedavg's, paired by seed, mean with 95% t-interval.

  On FEMNIST (network-bound, `clip_network` in `compute_network`) the pattern is the same: 30% liars x10 turn its +3.0% cut into -3.4% (0.36 stragglers per round against 4.36), 10% into +0.8%, and the `plausible` rule restores +3.0% / +2.2%. Its accuracy cost moves with the pruning: -1.56 points honest, -0.44 when the liars stop the pruning.
"""

from configs.paper import femnist_cnn
from configs.studies import lying

TARGET_ACCURACY = femnist_cnn.TARGET_ACCURACY
METHODS, RULES = lying.METHODS, lying.RULES
STUDY_TABLE = lying.STUDY_TABLE


def get_sweep(size: str = "cpu", **kwargs):
  """`lying.get_sweep` on the FEMNIST base."""
  return lying.get_sweep(size, base=femnist_cnn, **kwargs)
