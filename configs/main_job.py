"""The main job: fedavg and CLIP side by side where CLIP is built to help (compute-bound rounds).

Shakespeare (LEAF's construction from Project Gutenberg #100), LEAF LSTM x0.125, 10 speaking
roles (at most 1,000 train windows each), 2 of them on CPUs at 2/3 speed, 6 rounds of one local
epoch, every update summed by the SecAgg protocol (complete graph: at 10 clients every client
hears every time report, so each slow client knows it is a straggler; under SecAgg+ a client
hears only its k neighbours, see docs/design.md 2.2). The rounds are compute-bound: the slow
roles' training sets the round time, so pruning their sub-network shortens it.

Command (the README's main job):
  python scripts/compare.py --config configs/main_job.py --workdir runs/main_job --target=0.22
Hardware: 2 CPU cores, no GPU. Measured 2026-12-03, seed 0 (the same rows in a fresh clone
with the data downloaded from a mirror of the public files): fedavg mean virtual round 1.202 s,
final test accuracy 0.2323; clip_compute 0.9938 s (cut +17.3%), 0.2315; 1 min 53 s wall with
the cores shared with another job (data records prepared before), 2 min 38 s in the fresh
clone with a test suite running beside it (preparing the records included).
"""

from configs import base


def get_config():
  c = base.get_config()
  c.data.name = "shakespeare"
  c.model.name = "leaf_lstm"
  c.model.width = 0.125
  c.num_clients = 10
  c.rounds = 6
  c.batch_size = 20
  c.client_lr = 0.8
  c.data.max_examples = 1000
  c.eval_every = 1
  c.method = "clip_compute"
  c.secagg.enabled = True
  c.secagg.protocol = "secagg"
  c.devices.compute_slow = 2
  return c
