"""The main job: fedavg and CLIP side by side where CLIP is built to help (compute-bound rounds).

Shakespeare (LEAF's construction from Project Gutenberg #100), LEAF LSTM x0.125, 10 speaking
roles (at most 1,000 train windows each), 2 of them on CPUs at 2/3 speed, 6 rounds of one local
epoch, every update summed by the SecAgg protocol (complete graph). Each slow client learns that it
is a straggler from the histogram of every client's times summed under SecAgg
(`clip.straggler_info=auto`, docs/design.md 2.2). The rounds are compute-bound: the slow
roles' training sets the round time, so pruning their sub-network shortens it.

Command (the README's main job):
  python scripts/compare.py --config configs/main_job.py --workdir runs/main_job --target=0.22
Hardware: 2 CPU cores, no GPU. Measured 2026-12-04, seed 0, with the defaults of issues 24 and
27 (`relative_l2` + `band`, the summed time histogram, the server's work charged): fedavg mean
virtual round 1.202 s, final test accuracy 0.2323; clip_compute 0.9769 s (cut +18.7%), 0.2318;
3 min 36 s wall with the cores shared with two sweeps (data records prepared before). Before
those defaults (2026-12-03): clip_compute 0.9938 s (+17.3%), 0.2315.
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
