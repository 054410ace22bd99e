"""CIFAR-10 (JPEG re-encoded image folder), VGG-9, 20 of 100 Dirichlet(0.5) partitions, paper scale.

Accuracy on this JPEG copy can differ slightly from the original CIFAR-10.
Command:
  python scripts/train.py --config configs/cifar10_vgg9.py --workdir runs/cifar10
"""

from configs import base


def get_config():
  c = base.get_config()
  c.rounds = 100
  c.num_clients = 20
  c.local_epochs = 2
  c.batch_size = 32
  c.client_lr = 0.02
  c.client_momentum = 0.9
  c.eval_every = 10
  c.data.name = "cifar10"
  c.data.partition = "dirichlet"
  c.data.alpha = 0.5
  c.data.num_partitions = 100
  c.model.name = "vgg9"
  return c
