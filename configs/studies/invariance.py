"""Study (issue 25): does temporal invariance pick the units that matter least? FEMNIST.

CLIP's bet (DESIGN 2.4) is that the units whose weights changed least between w(t-1) and w(t)
are the safest to prune. Here every criterion prunes the same stragglers to the same keep
fraction, so only the choice of units differs:

  scenarios `keep0.5`, `keep0.7`: the compute stragglers of the paper sweep's `compute`
      scenario (20% on the slow CPU) keep exactly p = 0.5 / 0.7 of each layer's units from round
      2 on (`clip.fixed_keep`), whatever their keep rule would give;
  methods (the criteria):
      clip_compute                  invariance, `relative_l2` score (the default, DESIGN 2.4)
      clip_compute+max_relative     invariance, `max_relative` score (the default before issue 24)
      magnitude                     the smallest ||w|| of each unit's group
      taylor                        ORACLE: the smallest |sum w dL/dw| on 64 of the client's
                                    examples, an extra backward pass a real client would have
                                    to pay before training (the clock does not charge it)
      random                        Federated Dropout's random units
      ordered                       FjORD's last units
  and `fedavg` (nobody prunes), once per seed, as the reference (`reference/fedavg/seed<s>`).

The paper sweep's CPU setting (configs/paper/femnist_cnn.py, size cpu), SecAgg+ as there,
evaluated on every writer's test data (`data.test_clients=all`), 5 seeds. The tables give each
criterion's accuracy delta against `fedavg` paired by seed; `scripts/invariance_report.py
--criteria=...` measures how each criterion's order agrees with each unit's measured removal
importance (the rank-agreement table).

Results: configs/studies/README.md, "Does invariance pick the units that matter least?".

Command:
  python scripts/reproduce.py --config configs/studies/invariance.py --root runs/studies \
      --seeds 0,1,2,3,4
  (CIFAR-10: invariance_cifar10.py; Shakespeare, with the threshold sensitivity:
  invariance_shakespeare.py)
"""

from configs.paper import femnist_cnn
from configs.paper import sweep

KEEPS = (0.5, 0.7)
CRITERIA = ("clip_compute", "clip_compute+max_relative", "magnitude", "taylor", "random",
            "ordered")
SEEDS = (0, 1, 2, 3, 4)
TARGET_ACCURACY = {"cpu": 0.6, "full": 0.7}
# its grid table and plots (clipjax.reporting.study_tables.criteria_table, study_plots)
STUDY_TABLE = {"kind": "criteria", "criteria": CRITERIA, "contrast": "random"}
BASE = femnist_cnn


def keep_scenarios(keeps=KEEPS) -> dict[str, dict]:
  return {f"keep{p:g}": {"clip.fixed_keep": p} for p in keeps}


def get_sweep(size: str = "cpu", *, seeds=SEEDS, methods=None, scenarios=None, overrides=None,
              base=None, extra_scenarios=None):
  """`[(run_name, ConfigDict)]`: per seed, the reference `reference/fedavg` (nobody prunes, so
  one run serves every scenario), then each scenario's criteria.

  `scenarios` filters the scenarios by name (the reference runs whatever it says); `methods`
  filters by run method name (e.g. `clip_compute+max_relative`) or its method, the reference
  running when it is unfiltered or names `fedavg`; `extra_scenarios` (name -> (criteria, keys))
  adds scenarios of their own criteria, as the Shakespeare study's threshold sensitivity.
  """
  base = base or BASE
  grid = {name: (CRITERIA, keys) for name, keys in keep_scenarios().items()}
  grid.update(extra_scenarios or {})
  wanted = lambda name: not methods or name in methods or name.split("+")[0] in methods  # noqa: E731
  runs = []
  for seed in seeds:
    cells = [("reference", "fedavg", {})] if wanted("fedavg") else []
    cells += [(scenario, name, keys) for scenario, (criteria, keys) in grid.items()
              if not scenarios or scenario in scenarios for name in criteria if wanted(name)]
    for scenario, name, keys in cells:
      method = name.split("+")[0]
      (_, c), = sweep.build(base.size_config(size), seeds=[seed], methods=[method],
                            scenarios=["compute"], overrides=overrides)
      sweep.apply_overrides(c, keys)
      if name.endswith("+max_relative"):
        c.clip.score = "max_relative"
      c.data.test_clients = "all"
      sweep.apply_overrides(c, dict(overrides or {}))
      runs.append((f"{scenario}/{name}/seed{seed}", c))
  return runs
