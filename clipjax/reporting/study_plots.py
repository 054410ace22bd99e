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


def _point(ax, x, y, iv, color, horizontal: bool):
  """The delta `iv` in points at (its mean, y) or (x, its mean), its 95% interval as an error
  bar (none for one seed)."""
  if iv is None:
    return
  err = None if iv.n < 2 or math.isnan(iv.low) else [[100 * (iv.mean - iv.low)],
                                                      [100 * (iv.high - iv.mean)]]
  if horizontal:
    ax.errorbar([100 * iv.mean], [y], xerr=err, fmt="o", color=color, capsize=3)
  else:
    ax.errorbar([x], [100 * iv.mean], yerr=err, fmt="o", color=color, capsize=3)


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
  keeps = study_tables.keep_settings(cells)
  if keeps:
    fig, axes = plt.subplots(len(keeps), 2, figsize=(11, 1.2 + 0.45 * len(criteria) * len(keeps)),
                             squeeze=False, sharey=True)
    for row, setting in zip(axes, keeps):
      names = [c for c in criteria if (setting, c) in cells]
      for col, (key, what) in enumerate((("vs_fedavg", "fedavg"), ("vs_contrast", contrast))):
        ax = row[col]
        for y, name in enumerate(names):
          if not (key == "vs_contrast" and name == contrast):
            _point(ax, None, y, cells[(setting, name)].get(key),
                   f"C{criteria.index(name) % 10}", horizontal=True)
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set(xlabel=f"final-accuracy delta vs {what} (points, 95% CI)",
               title=f"keep p = {float(setting[len('keep'):]):g}")
    axes[0][0].invert_yaxis()  # shared: the first criterion on top
    fig.tight_layout()
    path = out / "criteria_accuracy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
  scaled = study_tables.threshold_rows(cells)
  if scaled:
    keep = scaled[0][1]["keep"]
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
      _point(right, scale, None, c["vs_fedavg"], "C0", horizontal=False)
    right.axhline(0.0, color="grey", linewidth=0.8)
    right.set(xlabel="threshold scale", ylabel="final-accuracy delta vs fedavg (points)",
              title=f"accuracy at keep p = {keep:g} (95% CI)")
    fig.tight_layout()
    path = out / "threshold.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
  return written
