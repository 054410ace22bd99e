"""Study (issue 26) on CIFAR-10: does the bit-plane upload hurt where compute sets the pace?

`configs/studies/upload_planes.py`'s first five arms on the CIFAR-10 paper sweep's
`compute_network` cell (`configs/paper/cifar10_vgg9.py`, CPU size).

Command:
  python scripts/reproduce.py --config configs/studies/upload_planes_cifar10.py --root runs/studies
  (writes runs/studies/upload_planes_cifar10_cpu/ and its tables.md)
"""

from configs.paper import cifar10_vgg9
from configs.paper import sweep
from configs.studies import upload_planes

TARGET_ACCURACY = cifar10_vgg9.TARGET_ACCURACY
STUDY_TABLE = upload_planes.STUDY_TABLE  # pairs whose arms it lacks are left out


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=None, scenarios=None,
              overrides=None):
  return upload_planes.get_sweep(size, seeds=seeds, methods=methods, scenarios=scenarios,
                                 overrides=overrides, base=cifar10_vgg9,
                                 arms=upload_planes.METHODS[:5])
