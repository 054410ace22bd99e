"""FEMNIST (LEAF, 300-writer real subset), LEAF CNN, paper scale: 20 writers, 30 rounds.

Command:
  python scripts/train.py --config configs/femnist_cnn.py --workdir runs/femnist
  (add --config.method=clip_compute --config.secagg.enabled=True for CLIP under SecAgg+)
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
