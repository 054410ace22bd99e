"""Device calibration (`clipjax.clock.calibration`): the default estimate, a measurement saved and
read back, and the errors that name their fix."""

import json

import pytest

from clipjax import cache
from clipjax.clock import calibration, devices


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
  return tmp_path


def test_default_is_the_documented_estimate_for_every_model(cache_dir):
  assert devices.FAST_FLOPS_PER_S == 10e9
  for model, width in (("convnet", 1.0), ("leaf_lstm", 0.5)):
    assert calibration.fast_flops("default", model, width) == devices.FAST_FLOPS_PER_S
  assert not any(cache_dir.iterdir())   # the default reads and writes nothing


def test_a_saved_measurement_is_read_back_for_its_model_and_width_only(cache_dir):
  path = calibration.save_measurement("convnet", 0.5, {"flops_per_s": 3.25e9, "threads": 1})
  assert path == cache_dir / "device" / "convnet_w0.5.json"
  assert json.loads(path.read_text()) == {"flops_per_s": 3.25e9, "threads": 1}
  assert calibration.fast_flops("measured", "convnet", 0.5) == 3.25e9
  # Width 1 was never measured.
  with pytest.raises(ValueError, match="convnet_w1.json"):
    calibration.fast_flops("measured", "convnet", 1.0)
  # A second measurement replaces the first.
  calibration.save_measurement("convnet", 0.5, {"flops_per_s": 4e9})
  assert calibration.fast_flops("measured", "convnet", 0.5) == 4e9


def test_measured_without_a_file_names_the_command_that_makes_it(cache_dir):
  with pytest.raises(ValueError) as err:
    calibration.fast_flops("measured", "leaf_lstm", 2.0)
  message = str(err.value)
  assert str(cache_dir / "device" / "leaf_lstm_w2.json") in message
  assert "python scripts/measure_device.py --model=leaf_lstm --width=2 --save" in message


def test_an_unknown_calibration_lists_the_known_ones(cache_dir):
  with pytest.raises(ValueError, match=r"calibration='guess' is unknown; choose one of "
                                       r"\('default', 'measured'\)"):
    calibration.fast_flops("guess", "convnet", 1.0)


@pytest.mark.parametrize("record", [{}, {"flops_per_s": 0}, {"flops_per_s": -1e9},
                                    {"seconds": 2.0}, {"flops_per_s": "fast"},
                                    {"flops_per_s": float("inf")}, {"flops_per_s": True}])
def test_a_record_without_positive_flops_per_s_is_refused(cache_dir, record):
  with pytest.raises(ValueError, match="flops_per_s > 0"):
    calibration.save_measurement("convnet", 1.0, record)
  assert not (cache_dir / "device").exists()


@pytest.mark.parametrize("text,problem", [('{"seconds": 2.0}', "no readable flops_per_s"),
                                          ('{"flops_per_s": "fast"}', "no readable flops_per_s"),
                                          ('{"flops_per_s": 0}', "flops_per_s=0.0"),
                                          ('{"flops_per', "no readable flops_per_s")])
def test_a_hand_edited_or_truncated_measurement_is_one_line_naming_the_fix(cache_dir, text,
                                                                            problem):
  path = calibration.measurement_file("vgg9", 0.125)
  path.parent.mkdir(parents=True)
  path.write_text(text)
  with pytest.raises(ValueError, match=problem) as err:
    calibration.fast_flops("measured", "vgg9", 0.125)
  assert "scripts/measure_device.py --model=vgg9 --width=0.125 --save" in str(err.value)
  assert "\n" not in str(err.value)
