"""Study beyond the paper: CLIP under churn, with cohorts sampled from a population.

A population of K = 50 FEMNIST writers (10 of them on the slow CPU); each round samples a
cohort of 10%, 50% or 100% of it, and each cohort writer is away with probability 0.2 on top
(`unavailable_rate`): it takes no part and misses that round's model. A CLIP writer that
missed rounds scores invariance against the last different global model it received
(`clip.reference=last_seen`, DESIGN 2.9), or the server also sends w(t-1), charged as a
second download (`clip.reference=server`). `fedavg` and `random` (random units at CLIP's keep
fractions) run on the same cohorts.

Base: `configs/paper/femnist_cnn.py` at its CPU size (LEAF CNN x0.25, 30 rounds, SecAgg+,
every writer's test data). Each writer reports the times of the last round it took part in; a
writer in its first round keeps the whole model.

Run names: `cohort<percent>/<method>/seed<s>`, methods fedavg, random, clip_compute (last
seen) and clip_compute+server.

Command:
  python scripts/reproduce.py --config configs/studies/churn.py --root runs/studies

measured: (not yet)
"""

from configs.paper import femnist_cnn
from configs.paper import sweep

POPULATION = 50
COHORT_FRACTIONS = (0.1, 0.5, 1.0)
UNAVAILABLE_RATE = 0.2
METHODS = ("fedavg", "random", "clip_compute", "clip_compute+server")
TARGET_ACCURACY = {"cpu": 0.6, "full": 0.7}


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=METHODS, scenarios=None,
              overrides=None, fractions=COHORT_FRACTIONS):
  """`[(run_name, ConfigDict)]`, seeds outermost; `scenarios` filters `cohort<percent>`."""
  runs = []
  for seed in seeds:
    for fraction in fractions:
      name = f"cohort{round(100 * fraction)}"
      if scenarios and name not in scenarios:
        continue
      for label in methods:
        method, _, reference = label.partition("+")
        base = femnist_cnn.size_config(size)
        base.num_clients = POPULATION
        (_, c), = sweep.build(base, seeds=[seed], methods=[method], scenarios=["compute"],
                              overrides=overrides)
        c.cohort_size = max(1, round(fraction * c.num_clients))
        c.unavailable_rate = UNAVAILABLE_RATE
        c.clip.reference = reference or "last_seen"
        runs.append((f"{name}/{label}/seed{seed}", c))
  return runs


def write_tables(root, target: float) -> str:
  """The study table (`clipjax.study_tables.churn_table`) as Markdown."""
  from clipjax import study_tables
  return study_tables.churn_table(root, METHODS, target)
