"""Study (issue 25), Shakespeare: `configs/studies/invariance.py`'s criteria at fixed keep
fractions on the Shakespeare paper sweep's CPU setting (configs/paper/shakespeare_lstm.py, size
cpu), and the invariance threshold's sensitivity:

  scenarios `threshold<s>` (s = 0.5, 0.75, 1.25, 1.5): `clip_compute` at p = 0.5 with a unit
  called invariant when its score is <= s x the band threshold (`clip.threshold_scale`; the band
  controller still tracks the unscaled value); s = 1 is `keep0.5/clip_compute`. The tables'
  invariant-unit columns give how many of the dropped units were invariant.

Results: configs/studies/README.md, "Does invariance pick the units that matter least?".

Command:
  python scripts/reproduce.py --config configs/studies/invariance_shakespeare.py \
      --root runs/studies --seeds 0,1,2,3,4
"""

from configs.paper import shakespeare_lstm
from configs.studies import invariance

SCALES = (0.5, 0.75, 1.25, 1.5)
STUDY_TABLE = invariance.STUDY_TABLE
TARGET_ACCURACY = {"cpu": 0.3, "full": 0.5}


def threshold_scenarios(scales=SCALES) -> dict:
  return {f"threshold{s:g}": (("clip_compute",), {"clip.fixed_keep": 0.5,
                                                  "clip.threshold_scale": s})
          for s in scales}


def get_sweep(size: str = "cpu", *, seeds=invariance.SEEDS, methods=None, scenarios=None,
              overrides=None):
  return invariance.get_sweep(size, seeds=seeds, methods=methods, scenarios=scenarios,
                              overrides=overrides, base=shakespeare_lstm,
                              extra_scenarios=threshold_scenarios())
