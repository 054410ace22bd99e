"""Study beyond the paper: CLIP when some clients lie about their times (README "Beyond the paper").

A seeded fraction of the clients multiplies the times it broadcasts by a factor (0.1:
"I am fast", 10: "I am slow"); everyone else is honest and cannot tell who lied (the sealed
broadcast is unchanged, `clipjax.clip.reports`). Each setting runs `clip_compute` and
`clip_network` with the DESIGN 2.2 quantile and with the `plausible` rule (the same quantile
over reports inside public bounds); `fedavg` (which reads no reports) runs once per seed, in
the `honest` setting, as every setting's reference.

Base: `configs/paper/cifar10_vgg9.py` at its CPU size (VGG-9 x0.125, 10 IID clients, 20
rounds of 2 local epochs, SecAgg+), straggler scenario `compute_network` (1 slow-CPU client,
1 on a slow CPU and 4G), so both CLIP rules have stragglers to find. CIFAR-10, because its
rounds are compute-bound (a slow client's fit is about 8x its network time at this size), so
the straggler decision decides the round time; FEMNIST's LEAF CNN rounds are network-bound at
either width (fit about 0.2-0.3x the rest on the slow CPU), where pruning moves little.
`configs/studies/lying_femnist.py` runs the same grid on FEMNIST.

Run names: `<setting>/<method>[+plausible]/seed<s>`, settings `honest` and
`liars<fraction>_x<factor>`.

Command:
  python scripts/reproduce.py --config configs/studies/lying.py --root runs/studies
  (writes runs/studies/lying_cpu/, its tables.md with the study table, and plots)

measured: (not yet)
"""

from configs.paper import cifar10_vgg9
from configs.paper import sweep

FRACTIONS = (0.1, 0.3)
FACTORS = (0.1, 10.0)
RULES = ("quantile", "plausible")
METHODS = ("clip_compute", "clip_network")
SCENARIO = "compute_network"
TARGET_ACCURACY = cifar10_vgg9.TARGET_ACCURACY
BASE = cifar10_vgg9  # the paper sweep file whose size_config the study runs on


def setting_name(fraction: float, factor: float) -> str:
  return "honest" if fraction == 0 else f"liars{fraction:g}_x{factor:g}"


def method_name(method: str, rule: str) -> str:
  return method if rule == "quantile" else f"{method}+{rule}"


def get_sweep(size: str = "cpu", *, seeds=sweep.SEEDS, methods=METHODS, scenarios=None,
              overrides=None, fractions=FRACTIONS, factors=FACTORS, rules=RULES, base=None):
  """`[(run_name, ConfigDict)]`: per seed, the honest runs, then every lying setting.

  `scenarios` (the settings to run, e.g. ["liars0.1_x10"]) filters the settings by name;
  the reference `honest/fedavg` runs always.
  """
  base = base or BASE
  grid = [(0.0, 1.0)] + [(f, x) for f in fractions for x in factors]
  runs = []
  for seed in seeds:
    (_, fedavg), = sweep.build(base.size_config(size), seeds=[seed], methods=["fedavg"],
                               scenarios=[SCENARIO], overrides=overrides)
    for fraction, factor in grid:
      name = setting_name(fraction, factor)
      if name == "honest":
        runs.append((f"honest/fedavg/seed{seed}", fedavg))
      if scenarios and name not in scenarios:
        continue
      for method in methods:
        (_, config), = sweep.build(base.size_config(size), seeds=[seed],
                                   methods=[method], scenarios=[SCENARIO], overrides=overrides)
        for rule in rules:
          c = config.copy_and_resolve_references()
          c.reports.liar_fraction = float(fraction)
          c.reports.liar_factor = float(factor)
          c.reports.rule = rule
          runs.append((f"{name}/{method_name(method, rule)}/seed{seed}", c))
  return runs


def write_tables(root, target: float) -> str:
  """The study table (`clipjax.study_tables.lying_table`) as Markdown."""
  from clipjax import study_tables
  return study_tables.lying_table(root, METHODS, RULES, target)
