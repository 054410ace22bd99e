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

measured: (not yet)
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
      c.method = "fedavg" if name == "fedavg_plain" else name
      c.secagg.enabled = name not in sweep.INSECURE
      c.devices.compute_slow = round(SLOW_FRACTION * FEMNIST_WRITERS)
      sweep.apply_overrides(c, dict(overrides or {}))
      runs.append((f"population/{name}/seed{seed}", c))
  return runs
