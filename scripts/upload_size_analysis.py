"""What-if analysis for issue 26 (DESIGN 2.10): how much of a round could CLIP's stragglers cut if
their secure upload followed their link instead of being padded to full size?

Reads the per-client time components of a finished secure `fedavg` run (`metrics.jsonl`: the
download, fit, mask, upload and latency seconds of every client in every round, DESIGN 2.1) and
recomputes each round with the flagged stragglers (total above the 1 - f quantile of every
client's total, as CLIP's histogram rule sees it) doing the most they could:

  fit      x rho_min, the FLOP fraction at `clip.min_keep` (the deepest cut CLIP allows);
  upload   x wire_bits / 32 (today every SecAgg upload is 32-bit words of the full model);

everyone else's components unchanged but their upload (x `--fast_wire_bits` / 32), the server's
seconds unchanged. It is a bound, not a
simulation: a straggler prunes no deeper than it needs in a real run, and it cannot know this
round's times (it decides from last round's). Row `32` is the bound for today's padded upload.

The wire bits per coordinate of a straggler that sends only the high h bits of each b-bit code
are h + ceil(log2 n) (the sum of n such planes must not wrap); the fast clients send that plus
the low plane. Encoding, privacy and drop-outs of such a split are in docs/secagg.md.

  python scripts/upload_size_analysis.py --run runs/paper/femnist_cnn_cpu/compute_network/fedavg/seed0
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cli  # noqa: E402

from clipjax.models import flops, get_model  # noqa: E402
from clipjax.clock import charges  # noqa: E402
from clipjax.reporting import summary as summary_lib, tables  # noqa: E402

_RUN = flags.DEFINE_string("run", None, "Folder of a finished secure fedavg run.")
_BITS = flags.DEFINE_list("wire_bits", ["32", "24", "16", "13", "8"],
                          "Wire bits per coordinate of a straggler's upload to try.")
_FAST_BITS = flags.DEFINE_float("fast_wire_bits", 32.0,
                                "Wire bits per coordinate of every other client's upload (a "
                                "bit-plane split costs them both planes: 35 at n = 20, b = 24).")
_FRACTION = flags.DEFINE_float("straggler_fraction", None,
                               "f of the 1 - f quantile (default: the run's clip setting).")


def rho_min(config: dict) -> float:
  """The FLOP fraction of the run's model at its `clip.min_keep` (0.5 by default)."""
  model = get_model(config["model"]["name"], width=float(config["model"]["width"]))
  return float(flops.flop_fraction(model, float(config["clip"]["min_keep"])))


def what_if(history: list[dict], wire_bits: float, rho: float, fraction: float,
            fast_bits: float = 32.0) -> dict:
  """Mean round seconds and mean flagged clients when the flagged stragglers send `wire_bits`
  per coordinate and train `rho` of the FLOPs, and the others send `fast_bits` (finished
  rounds only)."""
  rounds, flagged = [], []
  for row in history:
    if "survivors" not in row or any(f not in row for f in charges.TIME_FIELDS):
      continue
    parts = {f: np.asarray(row[f], np.float64) for f in charges.TIME_FIELDS}
    total = sum(parts.values())
    alive = np.asarray(row["survivors"], bool)
    slow = alive & (total > np.quantile(total[alive], 1.0 - fraction))
    parts["fit_s"] = np.where(slow, parts["fit_s"] * rho, parts["fit_s"])
    parts["upload_s"] = parts["upload_s"] * np.where(slow, wire_bits, fast_bits) / 32.0
    rounds.append(float(np.max(sum(parts.values())[alive]) + row["server_seconds"]))
    flagged.append(int(slow.sum()))
  return {"round_s": float(np.mean(rounds)), "flagged": float(np.mean(flagged)),
          "rounds": len(rounds)}


def main(argv):
  if len(argv) > 1 or not _RUN.value:
    sys.exit("usage: upload_size_analysis.py --run <finished secure fedavg run folder>")
  folder = pathlib.Path(_RUN.value)
  summary, history = tables.load_run(folder)
  if not summary or summary.get("method") != "fedavg" or summary.get("secagg") == "off":
    sys.exit(f"error: {folder} is not a finished fedavg run under SecAgg (its summary.json says "
             f"method={summary.get('method')!r}, secagg={summary.get('secagg')!r}); run one with "
             "scripts/reproduce.py --methods fedavg.")
  config = json.loads((folder / "config.json").read_text())
  rho = rho_min(config)
  fraction = _FRACTION.value or float(config["clip"]["straggler_fraction"])
  base = summary_lib.mean_round_time(history)
  rows = []
  for bits in map(float, _BITS.value):
    r = what_if(history, bits, rho, fraction, _FAST_BITS.value)
    rows.append({"wire_bits": bits, "round_s": r["round_s"], "cut": 1.0 - r["round_s"] / base,
                 "flagged": r["flagged"]})
  print(f"{folder}: fedavg mean round {base:.4f} s over {len(history)} rounds; flagged stragglers "
        f"fit x rho_min = {rho:.3f} (p = {config['clip']['min_keep']}), upload x bits / 32; the "
        f"others' upload x {_FAST_BITS.value:g} / 32; "
        f"quantile 1 - {fraction:g}")
  print(summary_lib.markdown_table(["straggler wire bits", "mean round s", "cut vs fedavg",
                                    "flagged/round"],
                                   [[f"{r['wire_bits']:g}", f"{r['round_s']:.4f}",
                                     f"{100 * r['cut']:+.1f}%", f"{r['flagged']:.2f}"]
                                    for r in rows]))
  print(json.dumps({"run": str(folder), "fedavg_round_s": base, "rho_min": rho,
                    "fast_wire_bits": _FAST_BITS.value, "rows": rows}))


if __name__ == "__main__":
  _cli.run(main)
