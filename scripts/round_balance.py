"""Is a sweep's round compute-bound or network-bound? The virtual clock's charges, unpruned.

For each size of a sweep file (`configs/paper/*.py`) and each of its straggler scenarios, builds
the run's data, model, devices and clock exactly as `clipjax.experiment` does and charges one
round of FedAvg under SecAgg+ (full model, no jitter) to every client. Prints the fit time of
the slowest client against the rest of its round (download, upload, protocol latency, mask
expansion): pruning can only shorten the fit, so where fit / rest is well below 1 CLIP has
little to cut, whatever it prunes.

  python scripts/round_balance.py --config configs/paper/femnist_cnn.py
  python scripts/round_balance.py --config configs/paper/cifar10_vgg9.py --sizes=cpu

No training runs; the full size needs only the model's shapes.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import _cli  # noqa: E402
from absl import flags  # noqa: E402

from clipjax import secagg  # noqa: E402
from clipjax.reporting import summary as summary_lib  # noqa: E402
from clipjax.clock import charges as clock_lib  # noqa: E402
from clipjax.config_types import ExperimentSpec  # noqa: E402
from clipjax.round import build  # noqa: E402
from clipjax.models import get_model, num_params  # noqa: E402
from configs.paper import sweep  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, "Sweep file, e.g. configs/paper/femnist_cnn.py.")
_SIZES = flags.DEFINE_list("sizes", ["cpu", "full"], "Sizes of the sweep to charge.")
flags.mark_flags_as_required(["config"])


def balance(config) -> dict:
  """The slowest client's fit and the rest of its round, in one unpruned SecAgg+ round."""
  spec = ExperimentSpec.from_config(config)
  data = build.load_data(spec)
  model = get_model(spec.model.name, num_classes=data.num_classes, width=spec.model.width)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  dim = num_params(shapes)
  num = len(data.client_ids)
  degree = secagg.choose_parameters(num, **build.key_agreement_kwargs(spec)).degree
  clock = clock_lib.ClockModel.for_model(
      model, population=build.device_population(spec),
      num_examples=np.asarray(data.train.num_examples), epochs=spec.local_epochs,
      seed=spec.seed, jitter_sigma=0.0)
  charged = clock_lib.charges(
      kept_units={layer.name: np.full(num, layer.size) for layer in model.unit_spec},
      kept_params=np.full(num, dim), num_params=dim, secure=True, prg_streams=1 + degree,
      broadcast=True)
  times = clock.times(0, charged)
  slowest = int(np.argmax(times.total))
  rest = times.total[slowest] - times.fit[slowest]
  return {"params": dim, "clients": num, "k": degree, "slowest": slowest,
          "examples": int(data.train.num_examples[slowest]), "fit": float(times.fit[slowest]),
          "rest": float(rest), "upload": float(times.upload[slowest])}


def main(argv):
  del argv
  try:
    module = sweep.load_sweep_file(_CONFIG.value)
    rows = []
    for size in _SIZES.value:
      for scenario in sweep.SCENARIOS:
        (_, config), = module.get_sweep(size, seeds=[0], methods=["fedavg"],
                                        scenarios=[scenario])
        b = balance(config)
        rows.append((size, scenario, f"{config.model.name} x{config.model.width:g}", b["params"],
                     b["clients"], b["examples"], b["fit"], b["rest"], b["upload"],
                     b["fit"] / b["rest"]))
  except (ValueError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
    sys.exit(f"error: {e}")
  print(summary_lib.markdown_table(
      ["size", "scenario", "model", "parameters D", "clients", "slowest client's examples",
       "its fit s", "rest of its round s", "of which upload s", "fit / rest"], rows))


if __name__ == "__main__":
  _cli.run(main)
