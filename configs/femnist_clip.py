"""CLIP vs baselines on real FEMNIST: 20 writers, LEAF CNN, 30 rounds, SecAgg+ on.

Scenario "a": 4 stragglers at 2/3 compute speed, everyone on 5G.
Scenario "b": the same 4, two of them also on 4G.
Scenario "population": all 300 writers of the data form the population, a cohort of 20 is
  sampled each round (DESIGN 2.9; the paper does not cover it); 20% of the population (60
  writers) have the slow CPU. A writer reports the times of the last round it took part in, so
  a writer in its first round keeps the whole model.

  python scripts/compare.py --config configs/femnist_clip.py:a --workdir runs/femnist_a \
      --methods=fedavg,random,ordered,fluid,clip_compute,clip_network
  python scripts/compare.py --config configs/femnist_clip.py:b --workdir runs/femnist_b \
      --methods=fedavg,clip_compute,clip_network
  python scripts/compare.py --config configs/femnist_clip.py:population \
      --config.model.width=0.25 --workdir runs/femnist_population \
      --methods=fedavg,random,clip_compute --seeds=0,1,2

Measured on 2 CPU cores with --config.model.width=0.25, every round evaluated, seed 0
(2026-11-22, with secagg.max_weight=1000, then the default; since 2026-12-03 the default is 0; the clock charges each method only its own protocol steps; the full tables were in
the README until commit 6f8a090, `git show 6f8a090^:README.md`, "Results"):
  scenario a, 1 local epoch: fedavg 0.763 s/round, acc 0.682; clip_compute 0.776 s (1.6% LONGER:
    the time broadcast costs more than pruning saves), 0.682; fluid 1.7% shorter than fedavg_plain.
  scenario a, --config.local_epochs=5: fedavg 1.415 s, 0.722; clip_compute 1.314 s (-7.2%),
    0.716; clip_network 1.309 s (-7.5%), 0.719; fluid 14.7% shorter than
    fedavg_plain.
  About 2 min (1 epoch) and 4-6 min (5 epochs) of wall time per method on one core.
"""

from configs import femnist_cnn


def get_config(scenario: str = "a"):
  c = femnist_cnn.get_config()
  c.method = "clip_compute"
  c.secagg.enabled = True
  c.secagg.protocol = "secagg+"
  if scenario == "a":
    c.devices.compute_slow = 4
  elif scenario == "b":
    c.devices.compute_slow = 2
    c.devices.both_slow = 2
  elif scenario == "population":
    c.num_clients = 0      # every writer
    c.cohort_size = 20
    c.devices.compute_slow = 60
    c.scale.chunk_clients = 10
  else:
    raise ValueError(f"scenario must be 'a', 'b' or 'population', got {scenario!r}")
  return c
