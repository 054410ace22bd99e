"""Study beyond the paper: all FEMNIST writers as the population, cohorts of 20 per round.

The paper trains the same 20 clients every round. Here the population is every writer of the
data (K = 300; 60 of them, 20%, on the slow CPU) and each round samples a cohort of C = 20, a
pure function of (seed, round) (DESIGN 2.9). A writer reports the times of the last round it
took part in, so in its first round it keeps the whole model; a CLIP writer scores invariance
against the last different global model it received. Evaluation is on every writer's test
data (4,763 images). Cohorts are trained and securely summed in chunks of 10 writers.

Base: `configs/paper/femnist_cnn.py` at its CPU size (LEAF CNN x0.25, 30 rounds, 1 local
epoch, SecAgg+ with the analysed (k, t) for 20 clients). Methods fedavg, random (random units at
CLIP's keep fractions) and clip_compute.

Command:
  python scripts/reproduce.py --config configs/studies/population.py --root runs/studies

Measured 2026-12-02, seeds 0, 1, 2, on one core of the 2-core development VM (the other core
ran another sweep): 27 min 41 s for the 9 runs (2.5-4 min each). Means over seeds; intervals
are 95% t-intervals; deltas are paired by seed (runs/studies/population_cpu/tables.md):

  method        mean round s  cut vs fedavg  s to acc 0.6  final acc              acc delta (points)
  fedavg        0.7684                       15.2          0.678 [0.547, 0.809]
  random        0.7864        -2.3%          16.8          0.675 [0.540, 0.811]   -0.28 [-1.06, +0.50]
  clip_compute  0.7864        -2.3%          15.8          0.678 [0.532, 0.824]   -0.01 [-1.99, +1.98]

2.77 of the 20 cohort writers per round decide they are stragglers (keep fraction 0.92); a
pruning CLIP writer finds 15.9 invariant and 63.3 slack units of the 536 it may drop. The
final accuracies spread over seeds because each seed's last cohorts differ; the paired deltas
do not.
"""

from configs.paper import femnist_cnn
from configs.paper import sweep

COHORT = 20
SLOW_FRACTION = 0.2
METHODS = ("fedavg", "random", "clip_compute")
TARGET_ACCURACY = {"cpu": 0.6, "full": 0.7}
FEMNIST_WRITERS = 300  # writers in the packed LEAF file (shared/data/femnist/README.md)


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=METHODS, scenarios=None,
              overrides=None):
  """`[("population/<method>/seed<s>", ConfigDict)]`, seeds outermost."""
  del scenarios  # one setting
  runs = []
  for seed in seeds:
    for name in sweep.method_names(methods):
      c = femnist_cnn.size_config(size)
      c.num_clients = 0                 # every writer
      c.cohort_size = COHORT
      c.scale.chunk_clients = 10
      c.seed = int(seed)
      sweep.set_method(c, name)
      c.devices.compute_slow = round(SLOW_FRACTION * FEMNIST_WRITERS)
      sweep.pin_published(c)  # as published (issues 24, 27 came later); overrides win below
      sweep.apply_overrides(c, dict(overrides or {}))
      runs.append((f"population/{name}/seed{seed}", c))
  return runs
