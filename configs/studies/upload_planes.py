"""Study (issue 26): network stragglers upload less under SecAgg (`clip.upload=planes`).

The FEMNIST paper sweep's `compute_network` cell, unchanged (`configs/paper/femnist_cnn.py`,
CPU size: LEAF CNN x0.25, 20 writers, 2 on the slow CPU, 1 on the slow network, 1 both, 30
rounds, 1 local epoch, SecAgg+, every round evaluated), with five methods:

  fedavg                 the reference;
  clip_compute           the paper's CLIP, padded upload;
  clip_network           CLIP whose network stragglers over-prune, padded upload;
  clip_compute+planes    clip_compute with the bit-plane upload (`clip.upload=planes`,
  clip_network+planes    `clip.high_bits=12`): network stragglers send only the 12-bit high
                         plane, the other clients both planes (docs/secagg.md, "Uploads that
                         follow the link");
  clip_network+planes8   the same with an 8-bit high plane (FEMNIST only): how far precision
                         can be traded for time.

Command:
  python scripts/reproduce.py --config configs/studies/upload_planes.py --root runs/studies
  (writes runs/studies/upload_planes_cpu/ and its tables.md)
"""

from configs.paper import femnist_cnn
from configs.paper import sweep

METHODS = ("fedavg", "clip_compute", "clip_network", "clip_compute+planes",
           "clip_network+planes", "clip_network+planes8")
TARGET_ACCURACY = femnist_cnn.TARGET_ACCURACY
BASE = femnist_cnn
HIGH_BITS = {"planes": 12, "planes8": 8}
# Its table (`clipjax.reporting.study_tables.pairs_table`): each bit-plane arm against fedavg
# and against the same method with the padded upload.
PAIRS = [(m, "fedavg") for m in METHODS[1:]] + [
    ("clip_compute+planes", "clip_compute"), ("clip_network+planes", "clip_network"),
    ("clip_network+planes8", "clip_network"), ("clip_network+planes8", "clip_network+planes")]
STUDY_TABLE = {"kind": "pairs", "pairs": PAIRS}


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=None, scenarios=None,
              overrides=None, base=None, arms=METHODS):
  """`[(run_name, ConfigDict)]`: per seed, the `arms` in the `compute_network` cell.
  `methods` filters by run name or base method; `base` is the paper config (FEMNIST here, the
  CIFAR-10 variant passes its own, and its arms)."""
  base = base or BASE
  runs = []
  for seed in seeds:
    if scenarios and "compute_network" not in scenarios:
      continue
    for name in arms:
      if methods and name not in methods and name.split("+")[0] not in methods:
        continue
      (_, c), = sweep.build(base.size_config(size), seeds=[seed], methods=[name.split("+")[0]],
                            scenarios=["compute_network"], overrides=overrides)
      if "+" in name:
        c.clip.upload = "planes"
        c.clip.high_bits = HIGH_BITS[name.split("+")[1]]
      runs.append((f"compute_network/{name}/seed{seed}", c))
  return runs
