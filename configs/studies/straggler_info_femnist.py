"""Study (issue 27), FEMNIST at n = 50: `configs/studies/straggler_info.py`'s grid on 50 writers.

LEAF CNN x0.25 (the FEMNIST paper sweep's CPU size), 50 writers, 10 of them (20%) on the slow
CPU, 1 local epoch, 6 rounds, the final round evaluated; scenarios `secagg` (complete graph) and
`secagg+` (the analysis' k and t at n = 50); methods fedavg, clip_compute (neighbours' reports),
clip_compute+histogram (256 bins) and clip_compute+histogram64. FEMNIST rounds are
network-bound, so the round-time cut is small whatever the clients know; the recall/precision
columns say how well they know it.

Results (seeds 0, 1, 2; measured 2026-12-03): configs/studies/README.md, "How stragglers
learn that they are stragglers under SecAgg+".

Command:
  python scripts/reproduce.py --config configs/studies/straggler_info_femnist.py --root runs/studies
"""

from configs.paper import femnist_cnn
from configs.paper import sweep
from configs.studies import straggler_info

SETTING = {"num_clients": 50, "local_epochs": 1, "rounds": 6, "eval_every": 6,
           "devices.compute_slow": 10, "devices.network_slow": 0, "devices.both_slow": 0}
PROTOCOLS = {"secagg": {"secagg.protocol": "secagg"}, "secagg+": {"secagg.protocol": "secagg+"}}
TARGET_ACCURACY = {"cpu": 0.5, "full": 0.7}
BASE = femnist_cnn


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=None, scenarios=None,
              overrides=None):
  return straggler_info.get_sweep(size, seeds=seeds, methods=methods, scenarios=scenarios,
                                  overrides=overrides, base=BASE, setting=SETTING,
                                  protocols=PROTOCOLS)
