"""Does CLIP's invariance rule discriminate, and does it pick the units that matter least?
Three measurements (docs/design.md 2.4; issue 25's criterion study, configs/studies/invariance.py).

What they found is DESIGN 2.4's last point; the numbers were in the README until commit 6f8a090
(`git show 6f8a090^:README.md`, "Invariance scores").

  # how often a pruning client's invariant count lies in the band [m, 2m], per run folder
  python scripts/invariance_report.py --runs=runs/fidelity/e1/clip_compute,runs/score/l2_s0
  # how stable each score ranks units between consecutive rounds of plain FedAvg
  python scripts/invariance_report.py --stability_config=configs/femnist_clip.py:a \
      --stability_config.model.width=0.25 --rounds=12

  # how well each criterion's order agrees with each unit's measured importance (issue 25)
  python scripts/invariance_report.py --criteria=femnist,cifar10,shakespeare --rounds=8 \
      --clients=4 --out=runs/studies/invariance_agreement.jsonl

The band check sums m over layers (metrics carry counts summed over layers). Stability is the
Spearman rank correlation, per prunable layer, between the unit scores of rounds r and r - 1.
Agreement (`clipjax.clip.importance.agreement`): along a FedAvg run of the paper sweep's CPU
config (seed `--seed`), after each round t >= 2 and for each of the first `--clients` clients,
the Spearman correlation, per layer, between each criterion's score of w(t) (oriented: larger =
kept first) and the loss increase of removing each unit of w(t) on
`--examples` of that client's training examples (spread evenly over its data); the table gives, per band of
rounds, the mean over clients and rounds and the share of client-rounds where rho > 0 (every
client-round's values go to `--out`). Early in training removing a unit can lower a client's
loss as often as raise it, with a sign that depends on the client's data, so the share matters
as much as the mean.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import _cli  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from clipjax import config_types  # noqa: E402
from clipjax.reporting import summary as summary_lib  # noqa: E402
from clipjax.clip import invariance  # noqa: E402
from clipjax.round import build  # noqa: E402
from clipjax.models import get_model, units  # noqa: E402

_RUNS = flags.DEFINE_list("runs", [], "Run folders (metrics.jsonl + config.json).")
_CONFIG = config_flags.DEFINE_config_file("stability_config", None, "Config for the stability run.")
_ROUNDS = flags.DEFINE_integer("rounds", 12, "FedAvg rounds of the stability / agreement run.")
_CRITERIA = flags.DEFINE_list("criteria", [], "Datasets of the criterion-agreement run: femnist, "
                              "cifar10, shakespeare (the paper sweeps' CPU configs).")
_CLIENTS = flags.DEFINE_integer("clients", 4, "Agreement: clients measured per round.")
_EXAMPLES = flags.DEFINE_integer("examples", 256, "Agreement: each client's examples measured.")
_SEED = flags.DEFINE_integer("seed", 0, "Agreement: the run's seed.")
_OUT = flags.DEFINE_string("out", "", "Agreement: JSON lines of every round's values.")
_RECORDS = flags.DEFINE_string("records", "", "Agreement: tabulate (and plot) the JSON lines an "
                               "earlier --out wrote instead of running.")
_PLOT = flags.DEFINE_string("plot", "", "Agreement: folder for agreement_<dataset>.png (needs "
                            "matplotlib: pip install -e '.[plots]').")

SWEEPS = {"femnist": "femnist_cnn", "cifar10": "cifar10_vgg9", "shakespeare": "shakespeare_lstm"}


def _drops(sizes, p):
  """Units a client with keep fraction p drops, summed over layers (the rule training uses)."""
  return sum(int(invariance.units_to_drop(n, p)) for n in sizes)


def band_counts(folder: pathlib.Path) -> tuple:
  config = json.loads((folder / "config.json").read_text())
  sizes = list(get_model(config["model"]["name"], num_classes=62,
                         width=config["model"]["width"]).width_dict.values())
  below = inside = above = 0
  ratios = []
  for line in (folder / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    for c, p in enumerate(row.get("keep_fraction", [])):
      if p < 1.0:
        m, k = _drops(sizes, p), row["invariant_units"][c]
        below, inside, above = below + (k < m), inside + (m <= k <= 2 * m), above + (k > 2 * m)
        ratios.append(k / m)
  return (str(folder), below + inside + above, inside, below, above,
          round(float(np.median(ratios)), 2) if ratios else "")


def _spearman(a, b) -> float:
  ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(ra, rb)[0, 1])


def stability(config, rounds: int) -> list[tuple]:
  config.method, config.rounds = "fedavg", rounds
  spec = config_types.ExperimentSpec.from_config(config)
  data = build.load_data(spec)
  model, params = build.init_model(spec, data.num_classes)
  algo = build.build_round(spec, data, model, params)
  state, last, rows = algo.init(params), None, []
  for r in range(rounds):
    before = state.server.params
    state, _ = algo.apply(state, r)
    now = {kind: units.unit_scores(model.unit_spec, state.server.params, before, kind=kind)
           for kind in units.SCORES}
    if last is not None and r >= 2:  # round 1's change (from the initial model) is atypical
      for kind in units.SCORES:
        rows.append((r + 1, kind, *[round(_spearman(np.asarray(now[kind][k]),
                                                    np.asarray(last[kind][k])), 2)
                                    for k in now[kind]]))
    last = now
  return rows, list(model.width_dict)


def agreement_rows(dataset: str, rounds: int, clients: int, examples: int, seed: int):
  """(records, layer names) of the criterion agreement on one dataset: one record per round,
  client and criterion, {layer: Spearman}."""
  import importlib
  import jax
  import jax.numpy as jnp
  from clipjax.clip import importance
  from clipjax.data import example_batch
  if dataset not in SWEEPS:
    raise ValueError(f"--criteria: unknown dataset {dataset!r}; choose from {sorted(SWEEPS)}")
  if rounds < 3:
    raise ValueError(f"--rounds={rounds}: the agreement needs at least 3 (it starts at round 2)")
  config = importlib.import_module(f"configs.paper.{SWEEPS[dataset]}").size_config("cpu")
  config.method, config.rounds, config.seed = "fedavg", rounds, seed
  config.secagg.enabled = False  # the global model's trajectory is what matters here
  spec = config_types.ExperimentSpec.from_config(config)
  data = build.load_data(spec)
  model, params = build.init_model(spec, data.num_classes)
  algo = build.build_round(spec, data, model, params)
  measure = jax.jit(lambda now, prev, x, y, ok, key: importance.agreement(
      model.unit_spec, model.apply, now, prev, x, y, ok, key))
  train = data.train
  state, records = algo.init(params), []
  for r in range(rounds):
    before = state.server.params
    state, _ = algo.apply(state, r)
    if r < 1:  # round 1's change, from the initial model, is atypical (as for stability)
      continue
    for c in range(min(clients, len(train.valid))):
      idx, ok = importance.spread_examples(jnp.asarray(train.valid[c]), examples)
      x, y = example_batch(data.kind, jnp.asarray(train.x[c]), jnp.asarray(train.y[c]), idx,
                           seq_len=data.seq_len or 80)
      key = jax.random.fold_in(jax.random.key(seed), r * 100_003 + c)
      rho = jax.device_get(measure(state.server.params, before, x, y, ok, key))
      for crit in importance.CRITERIA:
        records.append({"dataset": dataset, "round": r + 1, "client": c, "criterion": crit,
                        "spearman": {k: float(rho[crit][k]) for k in model.width_dict}})
  return records, list(model.width_dict)


def agreement_table(records, layers, bands: int = 3) -> str:
  """Per criterion and band of rounds, per layer: the mean Spearman over clients and rounds,
  and (in brackets) the share of (client, round) pairs where it is positive."""
  measured = sorted({r["round"] for r in records})
  groups = [g for g in np.array_split(np.asarray(measured), min(bands, len(measured))) if len(g)]
  rows = []
  for crit in dict.fromkeys(r["criterion"] for r in records):
    for g in groups:
      mine = [r for r in records if r["criterion"] == crit and r["round"] in set(g.tolist())]
      cells = []
      for k in layers:
        v = np.asarray([r["spearman"][k] for r in mine])
        cells.append(f"{np.nanmean(v):+.2f} ({np.mean(v > 0):.0%})")
      rows.append((crit, f"{g[0]}-{g[-1]}", *cells))
  return summary_lib.markdown_table(["criterion", "rounds"] + [f"rho {k}" for k in layers], rows)


def agreement_plot(records, layers, path) -> pathlib.Path:
  """One panel per layer: each criterion's Spearman per round, mean over the clients measured
  (band: the middle half of the clients), so a criterion's drift over training is visible."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rounds = sorted({r["round"] for r in records})
  cols = min(len(layers), 4)  # wrap CIFAR-10's eight layers into two rows
  rows = -(-len(layers) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows + 0.6), sharey=True,
                           squeeze=False)
  for ax in axes.flat[len(layers):]:
    ax.set_visible(False)
  for ax, layer in zip(axes.flat, layers):
    for i, crit in enumerate(dict.fromkeys(r["criterion"] for r in records)):
      v = [[r["spearman"][layer] for r in records if r["criterion"] == crit and r["round"] == t]
           for t in rounds]
      mean = [np.nanmean(x) for x in v]
      line, = ax.plot(rounds, mean, marker=".", label=crit, color=f"C{i % 10}")
      ax.fill_between(rounds, [np.nanpercentile(x, 25) for x in v],
                      [np.nanpercentile(x, 75) for x in v], color=line.get_color(), alpha=0.12,
                      linewidth=0)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="round", title=layer)
  for row in axes:
    row[0].set_ylabel("Spearman(criterion, removal importance)")
  axes.flat[len(layers) - 1].legend(fontsize=7)
  fig.suptitle(f"{records[0]['dataset']}: rank agreement with measured importance "
               "(mean over clients; band: middle half)")
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _agreement_output(dataset, records, layers, examples, clients):
  print(f"\n{dataset}: Spearman(criterion score, removal importance on the client's own "
        f"{'' if examples is None else f'{examples} '}examples), mean over {clients} clients "
        "and the rounds "
        "(share of client-rounds with rho > 0)")
  print(agreement_table(records, layers))
  if _PLOT.value:
    print(f"plot: {agreement_plot(records, layers, pathlib.Path(_PLOT.value) / f'agreement_{dataset}.png')}")


def main(argv):
  del argv
  try:
    _report()
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")


def _report():
  if _RUNS.value:
    print(summary_lib.markdown_table(
        ["run", "pruning client-rounds", "in [m, 2m]", "below m", "above 2m",
         "median invariant / m"], [band_counts(pathlib.Path(f)) for f in _RUNS.value]))
  if _RECORDS.value:
    lines = pathlib.Path(_RECORDS.value).read_text().splitlines()
    by_dataset = {}
    for line in lines:
      rec = json.loads(line)
      by_dataset.setdefault(rec["dataset"], []).append(rec)
    if not by_dataset:
      raise ValueError(f"--records={_RECORDS.value} holds no records (write them with --out)")
    for dataset, records in by_dataset.items():
      layers = list(records[0]["spearman"])
      _agreement_output(dataset, records, layers, None, len({r["client"] for r in records}))
  for dataset in _CRITERIA.value:
    records, layers = agreement_rows(dataset, _ROUNDS.value, _CLIENTS.value, _EXAMPLES.value,
                                     _SEED.value)
    _agreement_output(dataset, records, layers, _EXAMPLES.value, _CLIENTS.value)
    if _OUT.value:
      with open(_OUT.value, "a") as f:
        for rec in records:
          f.write(json.dumps(rec) + "\n")
  if _CONFIG.value is not None:
    rows, layers = stability(_CONFIG.value, _ROUNDS.value)
    print(summary_lib.markdown_table(["round", "score"] + [f"Spearman {k}" for k in layers], rows))


if __name__ == "__main__":
  _cli.run(main)
