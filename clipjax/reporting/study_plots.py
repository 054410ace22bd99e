"""PNG plots of the invariance-criteria study (`configs/studies/invariance*.py`).

Host side only; matplotlib is optional (`pip install -e '.[plots]'`). From the numbers of
`clipjax.reporting.study_tables.criteria_cells`:

  criteria_accuracy.png   per keep fraction, each criterion's final-accuracy delta against
                          fedavg and against random units (points, paired by seed, 95% CI);
  threshold.png           (sweeps with `threshold<s>` settings) the pruning clients' invariant
                          units (score <= threshold) and slack units (non-invariant, dropped),
                          and the accuracy delta against fedavg, by the threshold's scale.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Sequence

from clipjax.reporting import study_tables, sweep_plots


def _bar(ax, y, iv, color):
  """A point at the mean with its 95% interval as an error bar (no bar for one seed)."""
  if iv is None:
    return
  err = None if iv.n < 2 or math.isnan(iv.low) else [[100 * (iv.mean - iv.low)],
                                                      [100 * (iv.high - iv.mean)]]
  ax.errorbar([100 * iv.mean], [y], xerr=err, fmt="o", color=color, capsize=3)


def plot_criteria(root: str | pathlib.Path, criteria: Sequence[str], out: str | pathlib.Path,
                  contrast: str = "random") -> list[pathlib.Path] | None:
  """Writes the study's PNGs into `out`; None (nothing written) without matplotlib.

  Raises:
    ValueError: if `root` holds no finished `reference/fedavg` runs.
  """
  if not sweep_plots.available():
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cells, _, _ = study_tables.criteria_cells(root, contrast)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  written = []
  keeps = sorted({s for s, _ in cells if s.startswith("keep")}, key=lambda s: float(s[4:]))
  if keeps:
    fig, axes = plt.subplots(len(keeps), 2, figsize=(11, 1.2 + 0.45 * len(criteria) * len(keeps)),
                             squeeze=False, sharey=True)
    for row, setting in zip(axes, keeps):
      names = [c for c in criteria if (setting, c) in cells]
      for col, (key, what) in enumerate((("vs_fedavg", "fedavg"), ("vs_contrast", contrast))):
        ax = row[col]
        for y, name in enumerate(names):
          if not (key == "vs_contrast" and name == contrast):
            _bar(ax, y, cells[(setting, name)].get(key), f"C{criteria.index(name) % 10}")
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel=f"final-accuracy delta vs {what} (points, 95% CI)",
               title=f"keep p = {float(setting[4:]):g}")
    axes[0][0].invert_yaxis()  # shared: the first criterion on top
    fig.tight_layout()
    path = out / "criteria_accuracy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
  scaled = sorted([(float(s[len("threshold"):]), c) for (s, crit), c in cells.items()
                   if s.startswith("threshold") and crit == "clip_compute"], key=lambda x: x[0])
  if scaled:
    keep = scaled[0][1]["keep"]
    if keep and (f"keep{keep:g}", "clip_compute") in cells:
      scaled = sorted(scaled + [(1.0, cells[(f"keep{keep:g}", "clip_compute")])],
                      key=lambda x: x[0])
    scales = [s for s, _ in scaled]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("invariant", "invariant units (score <= threshold)"),
                       ("slack", "slack units (non-invariant, dropped)")):
      left.plot(scales, [c[key] if c[key] is not None else math.nan for _, c in scaled],
                marker="o", label=label)
    left.set(xlabel="threshold scale", ylabel="units per pruning client-round",
             title="the stragglers' invariant set")
    left.legend(fontsize=8)
    for scale, c in scaled:
      iv = c["vs_fedavg"]
      if iv is not None:
        err = None if iv.n < 2 else [[100 * (iv.mean - iv.low)], [100 * (iv.high - iv.mean)]]
        right.errorbar([scale], [100 * iv.mean], yerr=err, fmt="o", color="C0", capsize=3)
    right.axhline(0.0, color="grey", linewidth=0.8)
    right.set(xlabel="threshold scale", ylabel="final-accuracy delta vs fedavg (points)",
              title=f"accuracy at keep p = {keep:g} (95% CI)")
    fig.tight_layout()
    path = out / "threshold.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
  return written
