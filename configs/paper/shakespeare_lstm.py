"""Paper sweep on Shakespeare (LEAF construction), LEAF LSTM: six methods x two scenarios x seeds.

Built from `configs/shakespeare_lstm.py` (20 speaking roles, 30 rounds, 1 local epoch) with
SecAgg+ on for the secure methods. Scenarios, methods and run names: `configs/paper/sweep.py`.

  size="cpu":  CPU_SIZE below: the LSTM at width x0.125 (2 x 32 units), 10 roles (2
               stragglers), 8 rounds, batch 50 instead of LEAF's 10 (fewer, larger local steps
               on a CPU; the virtual clock counts the same FLOPs), and at most 6,000 train
               windows per role (`data.max_examples`, a seeded block of the role's text): the
               largest chosen role sets every client's padded step count (10-15k windows for
               seeds 0-2, while half the roles have under 4k), so the cap keeps 57-84% of the
               windows and cuts the padded steps 1.7-2.5x. Hardware:
               2 CPU cores, no GPU.
  size="full": the full LEAF LSTM (2 x 256 units), 20 roles (4 stragglers), 30 rounds of
               batch 10. Hardware: one GPU.

Every round is evaluated (time to accuracy is exact to the round). LEAF keeps every window of a
role, so a client's weight (its training windows) reaches 53,522; the public SecAgg bound
`secagg.max_weight` is raised to 60,000 for it.

Command:
  python scripts/reproduce.py --config configs/paper/shakespeare_lstm.py --size cpu
  python scripts/reproduce.py --config configs/paper/shakespeare_lstm.py --size full
  (writes runs/paper/shakespeare_lstm_<size>/, then its tables.md and PNG plots)

measured: (not yet)
"""

from configs import shakespeare_lstm
from configs.paper import sweep

# Time-to-accuracy targets (chosen for the tables, not taken from the paper).
TARGET_ACCURACY = {"cpu": 0.3, "full": 0.45}
# Every role's text is used (LEAF's construction), so a round trains on 30-60k windows whatever
# the client count; the CPU size shrinks the model, the rounds and the number of local steps.
CPU_SIZE = {"model.width": 0.125, "num_clients": 10, "rounds": 8, "batch_size": 50,
            "data.max_examples": 6000}


def size_config(size: str = "cpu"):
  """The base config of one size, before methods, scenarios and seeds."""
  sweep.check_size(size)
  c = shakespeare_lstm.get_config()
  c.eval_every = 1
  c.secagg.enabled = True
  c.secagg.protocol = "secagg+"
  c.secagg.max_weight = 60000.0  # public bound on a role's windows (the largest has 53,522)
  if size == "cpu":
    sweep.apply_overrides(c, CPU_SIZE)
  return c


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=sweep.METHODS,
              scenarios=sweep.SCENARIOS, overrides=None):
  """Ordered `[(run_name, ConfigDict)]` of the sweep (see `configs.paper.sweep.build`)."""
  return sweep.build(size_config(size), seeds=seeds, methods=methods, scenarios=scenarios,
                     overrides=overrides)
