"""Device calibration: where the fast compute tier's FLOP/s come from (DESIGN 2.1).

`default` is the documented estimate `devices.FAST_FLOPS_PER_S` (10 GFLOP/s, see
`clipjax.clock.devices`). `measured` is this machine: `scripts/measure_device.py --save` trains
one real client of the model on one CPU thread and stores the sustained training FLOP/s under
`$CLIPJAX_CACHE/device/<model>_w<width>.json`; a run with `devices.calibration="measured"`
reads it. Either way the slow tier is `devices.slow_compute_ratio` of the fast one.
"""

from __future__ import annotations

import json
import pathlib

from clipjax.clock import devices
from clipjax import cache

CALIBRATIONS = ("default", "measured")


def measurement_file(model: str, width: float) -> pathlib.Path:
  """Where `scripts/measure_device.py --save` stores the measurement of (model, width)."""
  return cache.cache_dir() / "device" / f"{model}_w{width:g}.json"


def save_measurement(model: str, width: float, record: dict) -> pathlib.Path:
  """Stores a measurement record (it must hold `flops_per_s`); returns the file."""
  value = record.get("flops_per_s", 0)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
    raise ValueError(f"a device measurement needs a finite flops_per_s > 0, got {record!r}")
  path = measurement_file(model, width)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record, indent=2) + "\n")
  return path


def fast_flops(calibration: str, model: str, width: float) -> float:
  """The fast tier's FLOP/s under `calibration` for a run of `model` at `width`.

  Raises:
    ValueError: for an unknown calibration, or `measured` without a readable, positive
      measurement on file.
  """
  if calibration == "default":
    return devices.FAST_FLOPS_PER_S
  if calibration != "measured":
    raise ValueError(f"devices.calibration={calibration!r} is unknown; choose one of "
                     f"{CALIBRATIONS}.")
  path = measurement_file(model, width)
  if not path.is_file():
    raise ValueError(f"devices.calibration='measured' needs {path}, which does not exist; "
                     f"measure this machine first: python scripts/measure_device.py "
                     f"--model={model} --width={width:g} --save")
  try:
    value = float(json.loads(path.read_text())["flops_per_s"])
  except (ValueError, KeyError, TypeError) as e:  # a hand-edited or truncated file
    raise ValueError(f"{path} holds no readable flops_per_s ({type(e).__name__}: {e}); measure "
                     f"again: python scripts/measure_device.py --model={model} "
                     f"--width={width:g} --save") from None
  if not value > 0 or value == float("inf"):
    raise ValueError(f"{path} holds flops_per_s={value!r}; a device does positive, finite work. "
                     f"Measure again: python scripts/measure_device.py --model={model} "
                     f"--width={width:g} --save")
  return value
