"""A toy federated setting shared by the tests: a one-hidden-layer MLP with 8 prunable units,
tiny client data, hand-computed SGD, and `make_setting` building a whole round over them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clipjax import methods, secagg
from clipjax.clip import invariance
from clipjax.clip import keep as keep_lib
from clipjax.clock import charges as clock_lib
from clipjax.clock import devices
from clipjax.fl import aggregation, local, training
from clipjax.fl import server as server_lib
from clipjax.models import units
from clipjax.round import algorithm, settings

F, H, K = 4, 8, 3
LR = 0.5
SPEC = (units.UnitLayer("hidden", H, (
    units.ParamSlice(("hidden", "kernel"), 1, "incoming"),
    units.ParamSlice(("hidden", "bias"), 0, "bias"),
    units.ParamSlice(("out", "kernel"), 0, "outgoing"))),)


def apply_fn(params, x, prune_mask=None):
  h = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  if prune_mask is not None:
    h = h * prune_mask["hidden"]
  return h @ params["out"]["kernel"] + params["out"]["bias"]


def init_params(seed=0):
  rng = np.random.default_rng(seed)
  f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
  return {"hidden": {"kernel": f32(rng.normal(size=(F, H))), "bias": f32(rng.normal(size=H) * .1)},
          "out": {"kernel": f32(rng.normal(size=(H, K))), "bias": f32(np.zeros(K))}}


def make_data(counts, slots=6, seed=1):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(len(counts), slots, F)).astype(np.float32)
  y = rng.integers(0, K, size=(len(counts), slots)).astype(np.int32)
  valid = np.arange(slots)[None] < np.asarray(counts)[:, None]
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(valid)


def hand_delta(params, x, y, mask):
  """One full-batch SGD step of mean cross-entropy, by hand in NumPy, zero at pruned units."""
  w1, b1 = np.asarray(params["hidden"]["kernel"], np.float64), np.asarray(params["hidden"]["bias"])
  w2, b2 = np.asarray(params["out"]["kernel"], np.float64), np.asarray(params["out"]["bias"])
  pre = x @ w1 + b1
  h = np.maximum(pre, 0) * mask
  z = h @ w2 + b2
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  loss = -np.log(p[np.arange(len(y)), y]).sum()
  gz = (p - np.eye(K)[y]) / len(y)
  gh = gz @ w2.T * mask * (pre > 0)
  grads = {"hidden": {"kernel": x.T @ gh, "bias": gh.sum(0)},
           "out": {"kernel": h.T @ gz, "bias": gz.sum(0)}}
  delta = jax.tree.map(lambda g: -LR * g, grads)
  delta["hidden"]["kernel"] *= mask[None]   # the parameter mask of DESIGN 2.5
  delta["hidden"]["bias"] *= mask
  delta["out"]["kernel"] *= mask[:, None]
  return delta, loss


def flops_per_example(kept):
  return 6.0 * (F * kept["hidden"] + kept["hidden"] * K)


def make_setting(method_name, counts, *, secure=False, rule="padded", compute_slow=1,
                 dropout_rate=0.0, chunk=0, cohort=None, mesh=None, loop="host", population=None,
                 fixed_keep=None, **extra):
  """A round of `method_name` on the toy; `population` replaces the default devices (one
  compute-slow client of `compute_slow`, fast 1e5 FLOP/s, slow 5e4)."""
  method = methods.get_method(method_name)
  num = len(counts)
  x, y, valid = make_data(counts)
  batch_fn = lambda xc, yc, i: (xc[i], yc[i])  # noqa: E731
  train = training.make_trainer(apply_fn, batch_fn, optax.sgd(LR),
                                local.LocalSpec(epochs=1, batch_size=6), loop=loop,
                                client_batch=1 if loop == "host" else 0,
                                mesh=mesh)
  params = init_params()
  server_opt = server_lib.make_server_optimizer("sgd", 1.0)
  tiers = devices.Tiers(compute={"fast": 1e5, "slow": 5e4})
  if population is None:
    population = devices.make_population(num, counts={"compute": compute_slow}, seed=0,
                                         tiers=tiers)
  clock = clock_lib.ClockModel(population=population, flops_per_example=flops_per_example,
                               full_widths={"hidden": H}, num_examples=np.asarray(counts),
                               epochs=1, seed=0, jitter_sigma=0.0)
  frac = lambda p: float(invariance.kept_units(H, p)) / H  # noqa: E731
  table = keep_lib.make_flop_table(frac, p_min=0.5, layer_sizes={"hidden": H})
  key_agreement = None
  if secure or method.broadcasts:
    key_agreement = settings.KeyAgreementSetting(
        kwargs=dict(protocol="secagg", threshold=cohort or num, allow_weak=True),
        dropout_rate=dropout_rate)
  secure_settings = (aggregation.SecureSettings(bits=secagg.max_safe_bits(num), clip=1.0,
                                                max_weight=100.0) if secure else None)
  setting = settings.RoundSetting(
      method=method, unit_spec=SPEC,
      # The hand derivations (tests/round/test_methods_rounds.py) follow the first DESIGN 2.4
      # rule: the max_relative score, the threshold starting at the smallest positive score.
      pruned_round=methods.make_pruned_round(
          method, SPEC, train, threshold_init="min",
          importance_fn=(methods.make_importance(SPEC, apply_fn, batch_fn)
                         if method.prune_rule == "taylor_oracle" else None)),
      aggregator=aggregation.make_aggregator(rule, params, secure_settings),
      aggregation_rule=rule, secagg_on=secure,
      server=settings.ServerSetting(
          init=lambda p: server_lib.server_init(p, server_opt),
          step=lambda st, d: server_lib.server_update(st, d, server_opt), seconds=0.125),
      clock=clock, keep=settings.KeepSetting(0.2, table, None, fixed_keep), key_agreement=key_agreement,
      data=settings.ClientData(x=np.asarray(x), y=np.asarray(y), valid=np.asarray(valid),
                               weights=np.asarray(counts, np.float32)),
      base_key=jax.random.key(3), seed=0, scorer=methods.make_scorer(SPEC, "max_relative"),
      scale=settings.ScaleSetting(cohort=cohort, chunk=chunk, mesh=mesh), **extra)
  return algorithm.make_round(setting), params, (np.asarray(x), np.asarray(y)), population


def run_rounds(algo, params, rounds):
  """(final state, the rows) of `rounds` rounds of `algo` from `params`."""
  state, rows = algo.init(params), []
  for r in range(rounds):
    state, row = algo.apply(state, r)
    rows.append(row)
  return state, rows
