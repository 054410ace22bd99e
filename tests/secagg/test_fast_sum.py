"""``simulate="sum"`` gives the protocol's outcome bit for bit; ``verify`` catches a difference.

Two secure sums with the same seed reveal the same things although their keys differ (masks
cancel exactly; see tests/secagg/test_stream.py), so a ``sum`` round is compared with a
``protocol`` round of the same seed field by field, bit for bit (``fast_sum.difference``: the
encoded sum, decoded total, weight total and mean, survivors, drop-outs per stage, non-finite
and too-few-holders exclusions, bytes per client per stage; for an abort its stage,
participants, exclusions and message), and the host seconds are reported under the same keys.
"""

import logging
import pickle

import numpy as np
import pytest

from clipjax import secagg
from clipjax.secagg import chunk_input, fast_sum, params
from clipjax.secagg import stream as stream_lib

N, DIM = 15, 37  # the shapes of tests/secagg/test_stream.py
THREAT = params.ThreatModel(dropout_fraction=0.4)


@pytest.fixture(autouse=True)
def _quiet_nonfinite_warnings(caplog):
  caplog.set_level(logging.ERROR, logger="clipjax.secagg")


def _inputs(seed, n=N):
  rng = np.random.default_rng(seed)
  x = rng.uniform(-0.9, 0.9, (n, DIM)).astype(np.float32)
  x[4, 3], x[9] = np.nan, np.inf  # non-finite rows: left out as drop-outs
  w = rng.integers(1, 100, n).astype(np.float64)
  return x, w


def _both(x, w=None, **kwargs):
  """(protocol outcome, sum outcome) of one-shot secure sums with the same arguments."""
  kwargs.setdefault("max_weight", None if w is None else 100.0)
  return tuple(fast_sum.outcome(lambda m=mode: secagg.secure_sum(x, w, simulate=m, **kwargs))
               for mode in ("protocol", "sum"))


def _assert_identical(protocol, fast):
  assert fast_sum.difference(protocol, fast) is None
  if not isinstance(protocol, secagg.RoundAborted):
    assert protocol.stats.seconds.keys() == fast.stats.seconds.keys()


# Seeds x protocols with drop-outs at every stage (explicit ones and a random rate) and
# non-finite rows: SecAgg+ with seed 2 aborts at Unmasking, the other rounds finish.
@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_sum_equals_the_protocol_bit_for_bit(protocol, seed):
  x, w = _inputs(seed)
  drops = secagg.Dropouts(advertise_keys=[N - 1], share_keys=[0], masked_input=[1],
                          unmasking=[2], rate=0.15)
  protocol_out, sum_out = _both(x, w, protocol=protocol, dropouts=drops, seed=seed,
                                threat=THREAT)
  _assert_identical(protocol_out, sum_out)
  if not isinstance(sum_out, secagg.RoundAborted):
    assert sum_out.nonfinite and all(sum_out.dropped[s] for s in secagg.STAGES)
    # Nothing cryptographic was done: no keys, shares or masked inputs in the transcript.
    server = sum_out.setup.server
    assert not (server.public_keys or server.share_ciphertexts or server.revealed_shares)
    assert server.masked_inputs is None
    assert server.masked_ids == protocol_out.setup.server.masked_ids


def _abort_cases():
  """(name, secure_sum kwargs, the stage it aborts at or None, too_few_holders) per case."""
  full = dict(protocol="secagg", threshold=8, allow_weak=True, seed=5)
  # Seed 7's SecAgg+ graph (k = 4, t = 3) has 6 ~ (0, 3, 4, 12) and 12 ~ (2, 3, 4, 6)
  # (checked in test_the_abort_cases_read_the_graph_they_name).
  plus = dict(protocol="secagg+", degree=4, threshold=3, allow_weak=True, seed=7)
  everyone_but = lambda *keep: [v for v in range(N) if v not in keep]  # noqa: E731
  return [
      ("advertise_keys", dict(full, dropouts=secagg.Dropouts(advertise_keys=range(8))),
       "advertise_keys", ()),
      # 7 candidates have 7 holders each (themselves included), fewer than t = 8
      ("share_keys", dict(full, dropouts=secagg.Dropouts(share_keys=range(1, 9))),
       "share_keys", (0, 9, 10, 11, 12, 13, 14)),
      # with clients 4 and 9 non-finite, 7 senders remain: fewer than t = 8
      ("masked_input", dict(full, dropouts=secagg.Dropouts(masked_input=[0, 1, 2, 3, 5, 6])),
       "masked_input", ()),
      ("unmasking: too few revealers", dict(full, dropouts=secagg.Dropouts(
          unmasking=[0, 1, 2, 3, 5, 6])), "unmasking", ()),
      # 6 and two of its holders leave before Unmasking: its secret gets 2 shares < t = 3
      ("unmasking: a secret lacks shares", dict(plus, dropouts=secagg.Dropouts(
          unmasking=[6, 0, 3])), "unmasking", ()),
      # 0, 3 and 4 leave at ShareKeys: 6 keeps one neighbour (12) and drops, then so does 12
      ("too few holders", dict(plus, dropouts=secagg.Dropouts(share_keys=[0, 3, 4])), None,
       (6, 12)),
      ("too few holders, then too few senders", dict(plus, dropouts=secagg.Dropouts(
          share_keys=[0, 3, 4], masked_input=everyone_but(1, 2))), "masked_input", (6, 12)),
  ]


def test_the_abort_cases_read_the_graph_they_name():
  setup = secagg.setup_round(N, protocol="secagg+", degree=4, threshold=3, allow_weak=True,
                             seed=7, simulate="sum")
  assert setup.graph_neighbours(6) == (0, 3, 4, 12)
  assert setup.graph_neighbours(12) == (2, 3, 4, 6)


@pytest.mark.parametrize("name,kwargs,stage,too_few", _abort_cases(),
                         ids=[case[0] for case in _abort_cases()])
def test_aborts_and_exclusions_at_every_stage_are_the_protocols(name, kwargs, stage, too_few):
  x, w = _inputs(11)
  if kwargs["protocol"] == "secagg+":  # finite: the holders' cases above count every client
    x = np.nan_to_num(x, nan=0.5, posinf=0.5)
  protocol_out, sum_out = _both(x, w, **kwargs)
  _assert_identical(protocol_out, sum_out)
  assert getattr(sum_out, "stage", None) == stage, name
  assert sum_out.too_few_holders == too_few
  if kwargs["protocol"] == "secagg" and stage in ("masked_input", "unmasking"):
    assert sum_out.nonfinite == (4, 9) and sum_out.participants


def _streamed(x, w, simulate, size, seed=0, partial=False):
  """A chunked round of ``simulate`` (chunks of ``size`` in a shuffled order); with
  ``partial``, each chunk is summed from pickled keys, as another process would."""
  drops = secagg.Dropouts(advertise_keys=[N - 1], share_keys=[0], masked_input=[1],
                          unmasking=[2], rate=0.15)
  setup = secagg.setup_round(N, protocol="secagg+", dropouts=drops, seed=seed, threat=THREAT,
                             simulate=simulate)
  stream = secagg.SecureSumStream(setup, w, max_weight=100.0, dim=DIM)
  order = np.random.default_rng(seed + 100).permutation(N)
  for ids in (order[i:i + size] for i in range(0, N, size)):
    if partial:
      keys = pickle.loads(pickle.dumps(stream.client_keys(ids)))
      stream.add_partial(*secagg.masked_partial(keys, x[ids], clip=1.0, bits=16))
    else:
      stream.add(ids, x[ids])
  return fast_sum.outcome(stream.finish)


def test_chunked_and_multi_process_sums_equal_the_protocol():
  x, w = _inputs(0)
  one_shot = _both(x, w, protocol="secagg+", seed=0, threat=THREAT, dropouts=secagg.Dropouts(
      advertise_keys=[N - 1], share_keys=[0], masked_input=[1], unmasking=[2], rate=0.15))[0]
  assert not isinstance(one_shot, secagg.RoundAborted)
  for size in (3, 7):
    _assert_identical(one_shot, _streamed(x, w, "protocol", size))
    _assert_identical(one_shot, _streamed(x, w, "sum", size))
    _assert_identical(one_shot, _streamed(x, w, "sum", size, partial=True))
  setup = secagg.setup_round(N, seed=0, threat=THREAT, simulate="sum")
  keys = secagg.SecureSumStream(setup, dim=DIM).client_keys(np.arange(3))
  assert not keys.blinded and keys.edge_keys.shape == (0, 8) and not keys.self_keys.any()


def test_sum_never_blinds(monkeypatch):
  def no_blinds(*args, **kwargs):
    raise AssertionError("simulate=sum must not blind")

  monkeypatch.setattr(chunk_input, "add_blinds", no_blinds)
  x, w = _inputs(3)
  res = secagg.secure_sum(x, w, max_weight=100.0, seed=3, threat=THREAT, simulate="sum")
  assert res.survivors.sum() == N - 2  # all but the non-finite rows


def test_verify_runs_both_and_passes_when_they_agree():
  x, w = _inputs(1)
  kwargs = dict(protocol="secagg+", seed=1, threat=THREAT, max_weight=100.0,
                dropouts=secagg.Dropouts(share_keys=[0], masked_input=[1], unmasking=[2]))
  verified = secagg.secure_sum(x, w, simulate="verify", **kwargs)
  assert fast_sum.difference(secagg.secure_sum(x, w, **kwargs), verified) is None
  assert verified.setup.server.share_ciphertexts  # the protocol ran: its result is returned
  assert verified.stats.seconds["verify"] > 0  # the sum twin's host seconds
  aborted = fast_sum.outcome(lambda: secagg.secure_sum(x, w, simulate="verify", **dict(
      kwargs, dropouts=secagg.Dropouts(unmasking=range(12)))))
  assert aborted.stage == "unmasking"  # the protocol's own abort, after both agreed on it


def test_verify_stops_on_any_bit_difference(monkeypatch):
  x, w = _inputs(2)
  unmask = stream_lib.SecureSumStream._unmask

  def one_bit_off(self):  # a broken sum path: the last code of the encoded sum is off by one
    res = unmask(self)
    if not self._blinded:
      encoded = res.encoded_sum.copy()
      encoded[-1] ^= np.uint32(1)
      res = res.__class__(**{**res.__dict__, "encoded_sum": encoded})
    return res

  monkeypatch.setattr(stream_lib.SecureSumStream, "_unmask", one_bit_off)
  with pytest.raises(secagg.SimulationMismatch) as err:
    secagg.secure_sum(x, w, max_weight=100.0, seed=2, round_index=12, threat=THREAT,
                      simulate="verify")
  assert str(err.value) == ("secagg round_index 12: simulate='sum' differs from the protocol "
                            "in encoded_sum (caught by verify)")
  assert not isinstance(err.value, secagg.RoundAborted)  # a bug stops the run, not the round


def test_difference_names_the_first_field_that_differs():
  x, w = _inputs(4)
  res, _ = _both(x, w, seed=4, threat=THREAT)
  assert fast_sum.difference(res, res.__class__(**{**res.__dict__, "mean": res.mean.copy()})) \
      is None
  ulp = res.mean.copy()
  ulp[5] = np.nextafter(ulp[5], np.inf)
  changed = {"mean": ulp, "weight_total": res.weight_total + 1e-9, "survivors": ~res.survivors,
             "dropped": {**res.dropped, "unmasking": (99,)}}
  for field, value in changed.items():
    assert fast_sum.difference(res, res.__class__(**{**res.__dict__, field: value})) == field
  abort = secagg.RoundAborted("round 0 aborted at share_keys: ...", "share_keys", (1, 2))
  assert fast_sum.difference(res, abort) == "outcome (protocol went on, sum aborted at share_keys)"
  later = secagg.RoundAborted("round 0 aborted at share_keys: ...", "share_keys", (1, 2, 3))
  assert fast_sum.difference(abort, later) == "participants"


def test_sum_setup_draws_keys_only_for_whoever_needs_them():
  setup = secagg.setup_round(N, protocol="secagg+", seed=0, simulate="sum",
                             dropouts=secagg.Dropouts(advertise_keys=[3]))
  assert setup.server.public_keys == {} and 3 not in setup.advertised
  u, v = 0, setup.neighbours(0)[0]
  sealed = secagg.seal_for_peer(setup, u, v, b"fit 1.5 s")  # the time broadcast still works
  assert secagg.open_from_peer(setup, v, u, sealed) == b"fit 1.5 s"
  assert sorted(setup.server.public_keys) == sorted([u, v])
  with pytest.raises(ValueError, match="dropped out before advertise_keys"):
    setup.mask_private(3)


def test_bad_simulate_values_are_named():
  x, _ = _inputs(0)
  with pytest.raises(ValueError, match=r"simulate='fast' is unknown; allowed: \('protocol', "
                                       r"'sum', 'verify'\)"):
    secagg.setup_round(N, simulate="fast")
  setup = secagg.setup_round(N, seed=0, simulate="sum", threat=THREAT)
  with pytest.raises(ValueError, match="simulate='protocol' was passed with a setup that has "
                                       "simulate='sum'"):
    secagg.secure_sum(x, setup=setup, simulate="protocol")
  verify = secagg.SecureSumStream(secagg.setup_round(N, seed=0, simulate="verify",
                                                     threat=THREAT), dim=DIM)
  with pytest.raises(ValueError, match="simulate='verify' checks the sum"):
    verify.add_partial(np.zeros(DIM + 1, np.uint32), [0])
