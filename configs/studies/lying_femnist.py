"""The lying-clients study (`configs/studies/lying.py`) on FEMNIST: LEAF CNN x0.25, 20 writers,
30 rounds, SecAgg+, every writer's test data (`configs/paper/femnist_cnn.py`, CPU size).

FEMNIST's rounds are network-bound here, so this grid shows the accuracy side of lying more
than its round-time side.

Command:
  python scripts/reproduce.py --config configs/studies/lying_femnist.py --root runs/studies

measured: (not yet)
"""

from configs.paper import femnist_cnn
from configs.studies import lying

TARGET_ACCURACY = femnist_cnn.TARGET_ACCURACY
METHODS, RULES = lying.METHODS, lying.RULES


def get_sweep(size: str = "cpu", **kwargs):
  """`lying.get_sweep` on the FEMNIST base."""
  return lying.get_sweep(size, base=femnist_cnn, **kwargs)


def write_tables(root, target: float) -> str:
  return lying.write_tables(root, target)
