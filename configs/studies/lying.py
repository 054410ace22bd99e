"""Study beyond the paper: CLIP when some clients lie about their times.

Results of both datasets: configs/studies/README.md, "Clients that lie about their times".

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

measured: 2026-12-03, 2-core development VM (no GPU), seeds 0, 1, 2, default calibration: 54 new
runs (clip_compute's 27 in 1 h 55 min on one core; clip_network's 27 in 63 min on both cores),
plus the honest fedavg / clip_compute / clip_network runs, which are the CIFAR-10 paper sweep's
`compute_network` runs with identical configs, copied (the runs are deterministic).

  `clip_compute` (quantile = DESIGN 2.2's rule; plausible = the robust rule):

  | liars | factor | quantile: round-time cut | quantile: acc delta, points [95% CI] | quantile: stragglers/round | plausible: round-time cut | plausible: acc delta, points [95% CI] | plausible: stragglers/round | plausible: reports dropped/round |
  |---|---|---|---|---|---|---|---|---|
  | 0 | 1 | +10.5% | -0.53 [-2.79, +1.72] | 1.92 | +10.5% | -0.53 [-2.79, +1.72] | 1.92 | 0.0 |
  | 0.1 | 0.1 | +10.6% | +0.07 [-2.19, +2.32] | 2.25 | +9.7% | -0.07 [-1.81, +1.68] | 2.25 | 3.8 |
  | 0.1 | 10 | +5.0% | +0.20 [-1.11, +1.51] | 1.23 | +9.7% | -0.07 [-1.81, +1.68] | 2.25 | 3.8 |
  | 0.3 | 0.1 | +12.1% | -0.70 [-4.15, +2.75] | 2.37 | +8.7% | -0.87 [-3.69, +1.96] | 2.37 | 11.4 |
  | 0.3 | 10 | -1.6% | -0.23 [-3.68, +3.21] | 0.17 | +8.7% | -0.87 [-3.69, +1.96] | 2.37 | 11.4 |

  `clip_network` (quantile = DESIGN 2.2's rule; plausible = the robust rule):

  | liars | factor | quantile: round-time cut | quantile: acc delta, points [95% CI] | quantile: stragglers/round | plausible: round-time cut | plausible: acc delta, points [95% CI] | plausible: stragglers/round | plausible: reports dropped/round |
  |---|---|---|---|---|---|---|---|---|
  | 0 | 1 | +14.6% | -0.67 [-4.35, +3.02] | 1.92 | +14.6% | -0.67 [-4.35, +3.02] | 1.92 | 0.0 |
  | 0.1 | 0.1 | +14.7% | -0.60 [-4.60, +3.40] | 2.25 | +13.3% | +0.07 [-3.06, +3.19] | 2.25 | 3.8 |
  | 0.1 | 10 | +7.3% | +0.53 [+0.02, +1.05] | 1.23 | +13.3% | +0.07 [-3.06, +3.19] | 2.25 | 3.8 |
  | 0.3 | 0.1 | +15.6% | -1.13 [-3.99, +1.72] | 2.37 | +10.5% | +0.50 [-4.87, +5.87] | 2.37 | 11.4 |
  | 0.3 | 10 | -1.4% | -0.47 [-2.88, +1.95] | 0.17 | +10.5% | +0.50 [-4.87, +5.87] | 2.37 | 11.4 |

  Reference: fedavg (honest setting), mean round 2.172 virtual s, final accuracy 0.3843 [0.3660, 0.4026] (n=3); seeds 0,1,2. Cut: 1 - mean(method round s) / mean(fedavg round s); delta: final accuracy minus fedavg's, paired by seed, mean with 95% t-interval.
"""

from configs.paper import cifar10_vgg9
from configs.paper import sweep

FRACTIONS = (0.1, 0.3)
FACTORS = (0.1, 10.0)
RULES = ("quantile", "plausible")
METHODS = ("clip_compute", "clip_network")
SCENARIO = "compute_network"
TARGET_ACCURACY = cifar10_vgg9.TARGET_ACCURACY
STUDY_TABLE = {"kind": "lying", "methods": METHODS, "rules": RULES}  # its grid table
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
    sweep.pin_published(fedavg, overrides)
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
          sweep.pin_published(c, overrides)  # as published (issues 24, 27 came later)
          c.reports.liar_fraction = float(fraction)
          c.reports.liar_factor = float(factor)
          c.reports.rule = rule
          runs.append((f"{name}/{method_name(method, rule)}/seed{seed}", c))
  return runs
