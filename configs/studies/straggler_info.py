"""Study (issue 27): how stragglers learn that they are stragglers under SecAgg+.

Under SecAgg+ a client hears the time reports of its k graph neighbours only and decides from
the quantile of that small sample (DESIGN 2.2); one slow client that misses it sets the round's
time. This study compares, on the setting where the loss was first measured (CIFAR-10, VGG-9
x0.125, 20 IID clients of 500 images, 4 of them on the slow CPU at 2/3 speed, 1 local epoch, 6
rounds, the final round evaluated), `clip_compute` under:

  scenario `secagg`:     SecAgg's complete graph: every client hears every report;
  scenario `secagg+k8`:  SecAgg+ with k = 8 neighbours (below the analysis' security target at
                         n = 20, as in the issue: `allow_weak_parameters`), with
                         `clip_compute`           the neighbours' reports (today's default) and
                         `clip_compute+histogram` the summed time histograms
                                                  (`clip.straggler_info=histogram`, 256 bins
                                                  over 0.01-10,000 s: the defaults), and
                         `clip_compute+histogram64` the same with 64 bins (24% wide).

`fedavg` runs in each scenario as its reference. The tables' `flagged vs all heard R/P` and
`pruning vs all heard R/P` columns compare each client's decision with the one it would take
with every report heard.

Results (seeds 0, 1, 2; measured 2026-12-03): configs/studies/README.md, "How stragglers
learn that they are stragglers under SecAgg+".

Command:
  python scripts/reproduce.py --config configs/studies/straggler_info.py --root runs/studies
  (writes runs/studies/straggler_info_cpu/ and its tables.md)
"""

from configs.paper import cifar10_vgg9
from configs.paper import sweep

SCENARIOS = {"secagg": {"secagg.protocol": "secagg"},
             "secagg+k8": {"secagg.protocol": "secagg+", "secagg.degree": 8,
                           "secagg.allow_weak_parameters": True}}
SETTING = {"num_clients": 20, "local_epochs": 1, "rounds": 6, "eval_every": 6,
           "devices.compute_slow": 4, "devices.network_slow": 0, "devices.both_slow": 0}
TARGET_ACCURACY = {"cpu": 0.15, "full": 0.6}
BASE = cifar10_vgg9


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=None, scenarios=None,
              overrides=None, base=None, setting=None, protocols=None):
  """`[(run_name, ConfigDict)]`: per seed and scenario, fedavg, clip_compute and (SecAgg+ only)
  clip_compute with the histogram. `methods` filters by run method name; `base`, `setting`
  and `protocols` (scenario -> SecAgg keys) default to this file's (the FEMNIST variant,
  `straggler_info_femnist.py`, passes its own)."""
  base = base or BASE
  setting = SETTING if setting is None else setting
  runs = []
  for seed in seeds:
    for scenario, protocol in (protocols or SCENARIOS).items():
      if scenarios and scenario not in scenarios:
        continue
      names = ["fedavg", "clip_compute"] + (["clip_compute+histogram",
                                             "clip_compute+histogram64"]
                                            if scenario != "secagg" else [])
      for name in names:
        if methods and name not in methods and name.split("+")[0] not in methods:
          continue
        (_, c), = sweep.build(base.size_config(size), seeds=[seed], methods=[name.split("+")[0]],
                              scenarios=["compute"], overrides={**setting, **(overrides or {})})
        sweep.apply_overrides(c, {**setting, **protocol, **(overrides or {})})
        # The rules the study ran with; each arm names its source explicitly.
        sweep.pin_published(c)
        c.clip.straggler_info = "histogram" if "+histogram" in name else "neighbours"
        if name.endswith("+histogram64"):
          c.clip.histogram_bins = 64
        runs.append((f"{scenario}/{name}/seed{seed}", c))
  return runs
