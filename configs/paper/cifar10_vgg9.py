"""Paper sweep on CIFAR-10, VGG-9: the paper's motivating setting of 20 clients, 4 stragglers.

Six methods x two straggler scenarios x seeds, built from `configs/cifar10_vgg9.py` (20 of 100
Dirichlet(0.5) partitions, 2 local epochs, SGD with momentum 0.9) with SecAgg+ on for the
secure methods. Scenarios, methods and run names: `configs/paper/sweep.py`.

  size="cpu":  CPU_SIZE below: VGG-9 at width x0.125, 10 of 100 IID partitions (500 images
               each, 2 stragglers), 20 rounds of 2 local epochs, evaluated every round on the
               10 partitions' share of the test set (1,000 images), so that one run takes about
               4 minutes on one core. IID, not Dirichlet(0.5): on 10 Dirichlet partitions the
               x0.125 model stays at chance (0.10-0.11 test accuracy after 12 rounds, measured
               with fedavg at lr 0.05), and with 1 local epoch on IID data it reaches only 0.24
               in 12 rounds (2 epochs: 0.33). Its accuracy stays far below the paper's.
               Hardware: 2 CPU cores, no GPU.
  size="full": VGG-9 at full width (3,491,530 parameters), 20 clients (4 stragglers), 100
               rounds of 2 local epochs. Hardware: one GPU.

Every round is evaluated (time to accuracy is exact to the round); the full size on the whole
10,000-image test set.

Command:
  python scripts/reproduce.py --config configs/paper/cifar10_vgg9.py --size cpu
  python scripts/reproduce.py --config configs/paper/cifar10_vgg9.py --size full
  (writes runs/paper/cifar10_vgg9_<size>/, then its tables.md and PNG plots)

measured: (not yet)
"""

from configs import cifar10_vgg9
from configs.paper import sweep

# Time-to-accuracy targets (chosen for the tables, not taken from the paper).
TARGET_ACCURACY = {"cpu": 0.2, "full": 0.6}
CPU_SIZE = {"model.width": 0.125, "num_clients": 10, "rounds": 20, "local_epochs": 2,
            "data.partition": "iid", "data.test_clients": "chosen"}


def size_config(size: str = "cpu"):
  """The base config of one size, before methods, scenarios and seeds."""
  sweep.check_size(size)
  c = cifar10_vgg9.get_config()
  c.eval_every = 1
  c.data.test_clients = "all"  # the whole 10,000-image test set (the CPU size: the chosen share)
  c.secagg.enabled = True
  c.secagg.protocol = "secagg+"
  if size == "cpu":
    sweep.apply_overrides(c, CPU_SIZE)
  return c


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=sweep.METHODS,
              scenarios=sweep.SCENARIOS, overrides=None):
  """Ordered `[(run_name, ConfigDict)]` of the sweep (see `configs.paper.sweep.build`)."""
  return sweep.build(size_config(size), seeds=seeds, methods=methods, scenarios=scenarios,
                     overrides=overrides)
