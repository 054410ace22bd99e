"""The wiring: spec -> data, model, devices, key agreement and round, in one place."""

import jax
import numpy as np
import pytest

from clipjax import multihost
from clipjax.config_types import ExperimentSpec
from clipjax.round import build
from configs import base


def _spec(**changes):
  c = base.get_config()
  c.num_clients, c.rounds = 4, 2
  for key, value in changes.items():
    node, *path = key.split(".")
    target = c if not path else c[node]
    target[path[-1] if path else node] = value
  return ExperimentSpec.from_config(c)


def test_load_data_passes_every_data_setting(monkeypatch):
  seen = {}
  monkeypatch.setattr(build, "load_federated", lambda name, **kw: seen.update(name=name, **kw))
  build.load_data(_spec(**{"data.test_clients": "all", "data.max_examples": 7}))
  assert seen == {"name": "femnist", "num_clients": 4, "seed": 0, "data_dir": None,
                  "partition": "iid", "alpha": 0.5, "num_partitions": None,
                  "test_clients": "all", "max_examples": 7}


def test_device_population_uses_the_counts_or_else_the_straggler_fraction():
  by_fraction = build.device_population(_spec(num_clients=10))
  assert int(np.sum(by_fraction.compute_slow)) == 2                   # 0.2 of 10, compute-slow
  by_counts = build.device_population(_spec(num_clients=10, **{"devices.network_slow": 3}))
  assert int(np.sum(by_counts.network_slow)) == 3 and not np.any(by_counts.compute_slow)
  tiers = build.tiers(_spec())
  assert tiers.compute["slow"] == pytest.approx(tiers.compute["fast"] * 2 / 3)


def test_model_parameters_are_a_function_of_the_seed():
  a = build.init_model(_spec(**{"model.width": 0.125}), 62)[1]
  b = build.init_model(_spec(**{"model.width": 0.125}), 62)[1]
  c = build.init_model(_spec(seed=1, **{"model.width": 0.125}), 62)[1]
  flat = lambda p: np.concatenate([np.ravel(x) for x in jax.tree.leaves(p)])  # noqa: E731
  assert np.array_equal(flat(a), flat(b)) and not np.array_equal(flat(a), flat(c))


def test_fluid_over_several_processes_is_refused_before_any_training():
  spec = _spec(method="fluid", **{"secagg.enabled": False, "model.width": 0.125})
  data = build.load_data(spec)
  model, params = build.init_model(spec, data.num_classes)
  two = multihost.Processes(index=0, count=2)
  with pytest.raises(ValueError, match="--num_processes=1"):
    build.build_round(spec, data, model, params, two)


def test_the_chunk_is_the_configured_one_or_the_largest_that_fits(monkeypatch):
  spec = _spec(**{"model.width": 0.125, "scale.chunk_clients": 3})
  data = build.load_data(spec)
  params = build.init_model(spec, data.num_classes)[1]
  assert build.resolve_chunk(spec, data, params)[0] == 3
  auto = _spec(**{"model.width": 0.125, "scale.chunk_clients": -1})
  chunk, note = build.resolve_chunk(auto, data, params)
  assert chunk == 4 and "auto" in note                    # a generous default budget: the cohort
  num_params = sum(int(np.size(a)) for a in jax.tree.leaves(params))
  rows = sum(np.asarray(a).nbytes for a in (data.train.x, data.train.y, data.train.valid)) // 4
  per_client = 10 * 4 * num_params + rows
  tight = _spec(**{"model.width": 0.125, "scale.chunk_clients": -1,
                   "scale.memory_budget_gb": 2.5 * per_client / 1e9})
  assert build.resolve_chunk(tight, data, params)[0] == 2   # 2.5 clients fit: a chunk of 2


def test_max_weight_0_is_the_populations_largest_count_and_an_explicit_one_is_checked():
  weights = np.array([120.0, 2500.0, 7.0], np.float32)
  assert build.max_weight(_spec(), weights) == 2500.0                 # the default, 0
  assert build.max_weight(_spec(**{"secagg.max_weight": 3000.0}), weights) == 3000.0
  settings = build._secure_settings(_spec(**{"secagg.enabled": True}), weights, 3)
  assert settings.max_weight == 2500.0
  with pytest.raises(ValueError, match="above max_weight=1000"):
    build._secure_settings(_spec(**{"secagg.enabled": True, "secagg.max_weight": 1000.0}),
                           weights, 3)


def test_cifar10_with_20_iid_clients_under_secagg_builds_with_the_default_bound():
  """The case that stopped at once with the old fixed bound (2,500 examples a client > 1,000)."""
  spec = _spec(num_clients=20, **{"data.name": "cifar10", "model.name": "vgg9",
                                  "model.width": 0.125, "secagg.enabled": True})
  data = build.load_data(spec)
  model, params = build.init_model(spec, data.num_classes)
  assert int(np.max(data.train.num_examples)) == 2500
  build.build_round(spec, data, model, params)
