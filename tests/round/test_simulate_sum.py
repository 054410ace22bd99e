"""`secagg.simulate=sum` through whole rounds: the same metrics as the protocol, host seconds aside.

The virtual clock charges the clients' protocol work from the round's graph and abort stage,
not from what the simulator ran, so every clock field must match too.
"""

import json

import pytest

from clipjax import experiment, secagg
from clipjax.clip import broadcast
from clipjax.clip.stragglers import TIME_REPORT_BYTES
from clipjax.config_types import ExperimentSpec
from clipjax.round import settings
from clipjax.secagg import stream as stream_lib
from tests.test_experiment import read_rows, tiny_config

# What the simulator's own work takes: the only fields allowed to differ.
HOST_FIELDS = ("host_seconds", "host_seconds_train", "host_seconds_sum", "host_seconds_secagg",
               "host_seconds_eval", "secagg_seconds")


def _config(method="clip_compute", **secagg_keys):
  # Seed 6 with 30% drop-outs, k = 4 and t = 4 on 6 clients: rounds 2 and 4 finish with a
  # drop-out, round 3 aborts at ShareKeys and round 5 at MaskedInputCollection. Chunks of 2
  # clients feed the stream; CLIP's sealed time broadcast runs from round 2 on.
  secagg_keys = {"degree": 4, **secagg_keys}
  c = tiny_config(method, threshold=4, allow_weak_parameters=True, dropout_rate=0.3,
                  **secagg_keys)
  c.seed, c.num_clients, c.rounds, c.eval_every = 6, 6, 5, 5
  c.scale.chunk_clients = 2
  c.clip.straggler_info = "neighbours"  # the sealed broadcast these tests compare (not `auto`)
  return c


def _without_host_fields(row):
  return {k: v for k, v in row.items() if k not in HOST_FIELDS}


def _dumped(row):
  return json.dumps(_without_host_fields(row), sort_keys=True)


def test_five_femnist_rounds_give_the_protocols_metrics(tmp_path):
  summaries = {mode: experiment.run(_config(simulate=mode, verify_every=verify),
                                    str(tmp_path / mode))
               for mode, verify in (("protocol", 0), ("sum", 2))}  # sum: rounds 2, 4 verified
  protocol, fast = (read_rows(tmp_path / mode) for mode in ("protocol", "sum"))
  assert [r.get("aborted_stage") for r in protocol] == [
      None, None, "share_keys", None, "masked_input"]
  assert [r.get("secagg_dropped") for r in protocol] == [0, 1, None, 1, None]
  assert any(r["stragglers"] for r in protocol)
  assert [_without_host_fields(r) for r in fast] == [_without_host_fields(r) for r in protocol]
  assert [_dumped(r) for r in fast] == [_dumped(r) for r in protocol]  # NaN losses and all
  for row in fast:  # the simulator reports its seconds under the protocol's stage names
    if "secagg_seconds" in row:
      assert set(row["secagg_seconds"]) - {"verify"} == set(protocol[0]["secagg_seconds"])
  assert [("verify" in r.get("secagg_seconds", {})) for r in fast] == [
      False, True, False, True, False]
  same = lambda s: json.dumps({k: v for k, v in s.items() if "host_seconds" not in k},  # noqa: E731
                              sort_keys=True)  # NaN (the aborted last round's loss) included
  assert same(summaries["sum"]) == same(summaries["protocol"])


# CLIP's time broadcast: the same reports reach the same clients (drop-outs at AdvertiseKeys
# send and hear none), so the same clients prune by as much, and the clock charges the same
# ciphertext bytes. A client drops before AdvertiseKeys while the broadcast runs in rounds 2
# and 3 with seed 2 under SecAgg (t = 4 of 6; both rounds then abort later), in round 3 with
# seed 6 under SecAgg+. The sum run verifies round 2; round 3 is its own.
# Each CLIP keep rule under one protocol (the rule does not touch the broadcast or the sum).
@pytest.mark.parametrize("method,protocol,seed", [("clip_compute", "secagg", 2),
                                                  ("clip_network", "secagg+", 6)])
def test_clip_rows_with_sum_are_the_protocols(method, protocol, seed, tmp_path):
  rows = {}
  for mode, verify in (("protocol", 0), ("sum", 2)):
    c = _config(method, protocol=protocol, degree=0 if protocol == "secagg" else 4,
                simulate=mode, verify_every=verify)
    c.seed, c.rounds, c.eval_every = seed, 3, 3
    experiment.run(c, str(tmp_path / mode))
    rows[mode] = read_rows(tmp_path / mode)
  assert [_dumped(r) for r in rows["sum"]] == [_dumped(r) for r in rows["protocol"]]
  protocol_rows = rows["protocol"]
  assert any(r["stragglers"] for r in protocol_rows)
  full = 6 * (5 if protocol == "secagg" else 4) * secagg.sealed_size(TIME_REPORT_BYTES)
  relayed = [r.get("broadcast_bytes") for r in protocol_rows[1:]]
  assert all(relayed) and min(relayed) < full  # fewer than every report: drop-outs


def test_verify_stops_the_run_on_a_bit_difference(tmp_path, monkeypatch):
  unmask = stream_lib.SecureSumStream._unmask

  def one_bit_off(self):  # a broken sum path
    res = unmask(self)
    if not self._blinded:
      encoded = res.encoded_sum.copy()
      encoded[0] ^= 1
      res = res.__class__(**{**res.__dict__, "encoded_sum": encoded})
    return res

  monkeypatch.setattr(stream_lib.SecureSumStream, "_unmask", one_bit_off)
  _run_until_verify_catches(tmp_path, r"encoded_sum")


def test_the_mode_of_each_round():
  setting = settings.KeyAgreementSetting(kwargs={}, dropout_rate=0.0, simulate="sum",
                                         verify_every=3)
  assert [setting.simulate_mode(r) for r in range(7)] == [
      "sum", "sum", "verify", "sum", "sum", "verify", "sum"]
  protocol = settings.KeyAgreementSetting(kwargs={}, dropout_rate=0.0, verify_every=2)
  assert [protocol.simulate_mode(r) for r in range(3)] == ["protocol", "verify", "protocol"]


@pytest.mark.parametrize("key,value,match", [
    ("simulate", "fast", r"config.secagg.simulate='fast' is not allowed; choose one of "
                         r"\('protocol', 'sum'\)"),
    ("verify_every", -1, r"config.secagg.verify_every=-1 must be >= 0"),
])
def test_bad_simulate_settings_are_named(key, value, match):
  with pytest.raises(ValueError, match=match):
    ExperimentSpec.from_config(_config(**{key: value}))


def test_verify_stops_the_run_when_the_time_reports_differ(tmp_path, monkeypatch):
  plain = broadcast._plain

  def late_report(routes, reports):  # a broken sum path: one report arrives 1 ulp late
    known, relay = plain(routes, reports)
    known.fit.view("u8")[routes.receiver[0], routes.slot[0]] += 1
    return known, relay

  monkeypatch.setattr(broadcast, "_plain", late_report)
  _run_until_verify_catches(tmp_path, r"time reports fit")


def _run_until_verify_catches(tmp_path, field: str):
  """A 2-round `sum` run whose round 2 verifies stops there, naming `field`; round 1 (sum
  only) was written."""
  c = _config(simulate="sum", verify_every=2)
  c.rounds = 2
  with pytest.raises(secagg.SimulationMismatch,
                     match=r"^secagg round_index 1: simulate='sum' differs from the protocol in "
                           + field + r" \(caught by verify\)$"):
    experiment.run(c, str(tmp_path))
  assert [r["round"] for r in read_rows(tmp_path)] == [1]
