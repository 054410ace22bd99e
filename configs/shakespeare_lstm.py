"""Shakespeare (LEAF construction from the Gutenberg text), LEAF LSTM, paper scale.

Command:
  python scripts/train.py --config configs/shakespeare_lstm.py --workdir runs/shakespeare
"""

from configs import base


def get_config():
  c = base.get_config()
  c.rounds = 30
  c.num_clients = 20
  c.batch_size = 10
  c.client_lr = 0.8
  c.eval_every = 5
  c.data.name = "shakespeare"
  c.model.name = "leaf_lstm"
  return c
