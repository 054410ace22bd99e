"""FEMNIST (LEAF, 300-writer real subset), LEAF CNN, paper scale: 20 writers, 30 rounds.

Command:
  python scripts/train.py --config configs/femnist_cnn.py --workdir runs/femnist
  (add --config.method=clip_compute --config.secagg.enabled=True for CLIP under SecAgg+)
Measured (2 CPU cores, shared; --config.eval_every=5): test accuracy 0.373 / 0.553 / 0.608 /
0.679 / 0.698 / 0.725 at rounds 5-30, 35 min wall.
"""

from configs import base


def get_config():
  c = base.get_config()
  c.rounds = 30
  c.num_clients = 20
  c.batch_size = 10
  c.data.name = "femnist"
  c.model.name = "leaf_cnn"
  return c
