"""CLIP vs baselines on real FEMNIST: 20 writers, LEAF CNN, 30 rounds, SecAgg+ on.

Scenario "a": 4 stragglers at 2/3 compute speed, everyone on 5G.
Scenario "b": the same 4, two of them also on 4G.

  python scripts/compare.py --config configs/femnist_clip.py:a --workdir runs/femnist_a \
      --methods=fedavg,random,ordered,fluid,clip_compute,clip_network
  python scripts/compare.py --config configs/femnist_clip.py:b --workdir runs/femnist_b \
      --methods=fedavg,clip_compute,clip_network

Measured on 2 CPU cores with --config.model.width=0.25 (tables in the README):
  scenario a, 1 local epoch: fedavg 0.772 s/round, acc 0.688; clip_compute 0.755 s (-2.2%), 0.682.
  scenario a, --config.local_epochs=5 --config.devices.fast_flops=6.1e9: fedavg 1.980 s, 0.732;
    clip_compute 1.787 s (-9.8%), 0.735; clip_network 1.785 s, 0.722.
  scenario b, same 5-epoch settings: clip_compute 2.228 s, 0.738; clip_network 1.835 s, 0.725.
  About 3.5 min (1 epoch) and 9-13 min (5 epochs) of wall time per method, SecAgg+ included.
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
  else:
    raise ValueError(f"scenario must be 'a' or 'b', got {scenario!r}")
  return c
