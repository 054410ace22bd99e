"""Study (issue 25), CIFAR-10: `configs/studies/invariance.py`'s criteria at fixed keep fractions
on the CIFAR-10 paper sweep's CPU setting (configs/paper/cifar10_vgg9.py, size cpu).

Results: configs/studies/README.md, "Does invariance pick the units that matter least?".

Command:
  python scripts/reproduce.py --config configs/studies/invariance_cifar10.py --root runs/studies \
      --seeds 0,1,2,3,4
"""

from configs.paper import cifar10_vgg9
from configs.studies import invariance

STUDY_TABLE = invariance.STUDY_TABLE
TARGET_ACCURACY = {"cpu": 0.3, "full": 0.6}


def get_sweep(size: str = "cpu", *, seeds=invariance.SEEDS, methods=None, scenarios=None,
              overrides=None):
  return invariance.get_sweep(size, seeds=seeds, methods=methods, scenarios=scenarios,
                              overrides=overrides, base=cifar10_vgg9)
