"""CLIP vs baselines on real FEMNIST: 20 writers, LEAF CNN, 30 rounds, SecAgg+ on.

Scenario "a": 4 stragglers at 2/3 compute speed, everyone on 5G.
Scenario "b": the same 4, two of them also on 4G.

  python scripts/compare.py --config configs/femnist_clip.py:a --workdir runs/femnist_a \
      --methods=fedavg,random,ordered,fluid,clip_compute,clip_network
  python scripts/compare.py --config configs/femnist_clip.py:b --workdir runs/femnist_b \
      --methods=fedavg,clip_compute,clip_network

The model width and the measured table are in the README.
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
