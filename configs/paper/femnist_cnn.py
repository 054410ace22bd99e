"""Paper sweep on real FEMNIST (LEAF writers), LEAF CNN: six methods x two straggler scenarios x seeds.

Built from `configs/femnist_cnn.py` (20 writers, 30 rounds, 1 local epoch) with SecAgg+ on for
the secure methods and every round evaluated (time to accuracy exact to the round). Scenarios,
methods and run names: `configs/paper/sweep.py`.

  size="cpu":  LEAF CNN at width x0.25 (437,150 parameters), 20 writers, 30 rounds: the
               README's FEMNIST setting. Hardware: 2 CPU cores, no GPU.
  size="full": the full-width LEAF CNN (6,603,710 parameters), 20 writers, 30 rounds.
               Hardware: one GPU.

Command:
  python scripts/reproduce.py --config configs/paper/femnist_cnn.py --size cpu
  python scripts/reproduce.py --config configs/paper/femnist_cnn.py --size full
  (writes runs/paper/femnist_cnn_<size>/, then its tables.md and PNG plots)

measured: (not yet)
"""

from configs import femnist_cnn
from configs.paper import sweep

# Time-to-accuracy targets (chosen for the tables, not taken from the paper).
TARGET_ACCURACY = {"cpu": 0.6, "full": 0.7}


def size_config(size: str = "cpu"):
  """The base config of one size, before methods, scenarios and seeds."""
  sweep.check_size(size)
  c = femnist_cnn.get_config()
  c.eval_every = 1
  c.data.test_clients = "all"  # every writer's test data (4,763 images), not only the 20's
  c.secagg.enabled = True
  c.secagg.protocol = "secagg+"
  if size == "cpu":
    c.model.width = 0.25
  return c


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=sweep.METHODS,
              scenarios=sweep.SCENARIOS, overrides=None):
  """Ordered `[(run_name, ConfigDict)]` of the sweep (see `configs.paper.sweep.build`)."""
  return sweep.build(size_config(size), seeds=seeds, methods=methods, scenarios=scenarios,
                     overrides=overrides)
