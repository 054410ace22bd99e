"""End-to-end runs of every method on real FEMNIST, and bad input through the loop and CLI."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

import numpy as np

from clipjax import config_types, experiment, methods
from configs import base

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(method, **secagg):
  c = base.get_config()
  c.method = method
  c.rounds = 2                 # pruning starts in round 2, after the first time reports
  c.num_clients = 4
  c.batch_size = 32
  c.eval_every = 2
  c.model.width = 0.125
  c.devices.compute_slow = 1
  c.secagg.enabled = method != "fluid"
  for k, v in secagg.items():
    c.secagg[k] = v
  return c


def read_rows(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["fedavg", "random", "ordered", "fluid", "clip_compute",
                                    "clip_network", "taylor"])
def test_each_method_runs_end_to_end_on_femnist(method, tmp_path):
  # degree=3: every client hears all 3 peers (the analysis alone would pick a ring for n = 4).
  config = tiny_config(method, degree=3)
  info = config_types.ExperimentSpec.from_config(config).clip.straggler_info
  summary = experiment.run(config, str(tmp_path))
  rows = read_rows(tmp_path)
  source = json.loads((tmp_path / "summary.json").read_text())["data_source"]
  assert source == summary["data_source"] and len(source["sha256"]) == 64
  assert source["files"] and all(pathlib.Path(f).exists() for f in source["files"])
  assert [r["round"] for r in rows] == [1, 2]
  for key in ("round_time_s", "virtual_time_s", "stragglers", "keep_fraction", "invariant_units",
              "slack_units", "train_loss", "host_seconds"):
    assert key in rows[1], key
  assert all(math.isfinite(r["train_loss"]) for r in rows)
  assert 0.0 <= rows[1]["test_accuracy"] <= 1.0
  assert rows[1]["virtual_time_s"] == pytest.approx(rows[0]["round_time_s"] + rows[1]["round_time_s"])
  assert rows[0]["keep_fraction"] == [1.0] * 4      # round 1: nobody knows any times yet
  for r in rows:  # every round time follows from the per-client components in the file alone
    parts = sum(np.asarray(r[k]) for k in ("download_s", "fit_s", "mask_s", "upload_s",
                                           "latency_s"))
    np.testing.assert_allclose(parts, r["client_time_s"], rtol=0, atol=1e-8)
    recomputed = float(np.max(parts[np.asarray(r["survivors"], bool)])) + r["server_seconds"]
    assert recomputed == pytest.approx(r["round_time_s"], abs=1e-8)
  m = methods.METHODS[method]
  secure_messages = 5 if c_secure(method) else 2
  assert rows[0]["messages"] == [secure_messages] * 4
  # The `auto` default: pruning methods under SecAgg read the summed histogram, which rides
  # in the masked upload (no message); the sealed reports cost one more (two without SecAgg).
  assert info == ("histogram" if m.broadcasts and c_secure(method) else "neighbours")
  broadcast = m.broadcasts and m.prunes and info == "neighbours"
  extra = (1 if broadcast else 0) + (1 if broadcast and not c_secure(method) else 0)
  assert rows[1]["messages"] == [secure_messages + extra] * 4
  assert json.loads((tmp_path / "config.json").read_text())["method"] == method
  assert (tmp_path / "checkpoints" / "final").exists()
  _check_server_seconds_by_hand(config, summary["params"], info, rows)
  if method == "fluid":
    assert "secagg_survivors" not in rows[1] and summary["secagg"] == "off"
  else:
    assert rows[1]["secagg_survivors"] == 4 and summary["secagg"] == "secagg+"
  if method == "fedavg":
    assert rows[1]["keep_fraction"] == [1.0] * 4 and rows[1]["stragglers"] == []
  else:
    # With 4 clients and f = 0.2, exactly the slowest client is above the 80th percentile.
    assert len(rows[1]["stragglers"]) == 1
    straggler = rows[1]["stragglers"][0]
    keep = rows[1]["keep_fraction"]
    assert all(p == 1.0 for i, p in enumerate(keep) if i != straggler)
    if method == "clip_network":  # rho = (T* - net) / fit < 1 for every straggler
      assert keep[straggler] < 1.0
    if methods.METHODS[method].prune_rule.endswith("invariance") and keep[straggler] < 1.0:
      assert rows[1]["invariant_units"][straggler] + rows[1]["slack_units"][straggler] > 0
    # Counts only for the clients that prune (DESIGN 2.4).
    assert all(rows[1]["invariant_units"][i] == 0 for i in range(4) if keep[i] == 1.0)


def c_secure(method):
  return method != "fluid"


def _check_server_seconds_by_hand(config, num_params, info, rows):
  """The server's seconds of each round from the counts of clipjax/clock/server.py's docstring,
  for 4 clients on a complete graph without drop-outs: every survivor's self-mask is rebuilt
  and expanded, no pairwise mask is (nobody dropped)."""
  from clipjax import secagg
  from clipjax.round import build
  spec = config_types.ExperimentSpec.from_config(config)
  rate = 10.0 * spec.devices.fast_flops  # devices.server_speedup's default
  assert spec.devices.server_speedup == 10.0 and rate > 0
  for r in rows:
    if c_secure(config.method):
      t = secagg.choose_parameters(4, **build.key_agreement_kwargs(spec)).threshold
      words = num_params + 1 + (2 * 256 if info == "histogram" else 0)
      want = {"aggregate": 4 * words, "unmask_prg": 4 * words * 64,
              "shamir": 4 * t * t * 100, "fluid": 0}
    else:  # fluid in the clear: the kept coordinates and the weight; the voters' scoring
      voters = 4 - len(r["stragglers"])
      pruned = sum(p < 1 for p in r["keep_fraction"])
      aggregate = r["server_s_parts"]["aggregate"] * rate  # a straggler uploads less than D + 1
      assert (4 - pruned) * (num_params + 1) + pruned <= aggregate <= 4 * (num_params + 1) - pruned
      want = {"aggregate": aggregate, "unmask_prg": 0, "shamir": 0,
              "fluid": voters * num_params * 4}
    for part, ops in want.items():
      assert r["server_s_parts"][part] == pytest.approx(ops / rate, rel=1e-9), part
    assert r["server_seconds"] == pytest.approx(sum(want.values()) / rate, rel=1e-6)
    assert r["server_seconds"] > 0


def test_participation_weighted_aggregation_with_dropouts(tmp_path):
  c = tiny_config("clip_compute", dropout_rate=0.2)
  c.clip.aggregation = "participation_weighted"
  c.num_clients = 6
  summary = experiment.run(c, str(tmp_path))
  # The bound for Binomial drop-outs is reported beside the analysis' (<= 1 drop-out of 6).
  assert summary["secagg_parameters"]["max_dropouts"] == 1
  assert summary["p_abort_injected"] > summary["secagg_parameters"]["p_abort"]
  rows = read_rows(tmp_path)
  for r in rows:
    if "aborted" not in r:
      assert r["secagg_survivors"] + r["secagg_dropped"] == 6
      assert math.isfinite(r["train_loss"])


@pytest.mark.parametrize("key,value,match", [
    ("method", "fedprox", "config.method='fedprox'"),
    ("data.name", "mnist", "config.data.name='mnist'"),
    ("model.name", "resnet", "config.model.name='resnet'"),
    ("clip.straggler_fraction", 1.0, "straggler_fraction"),
    ("devices.compute_slow", 9, "exceed num_clients"),
    ("clip.straggler_info", "gossip", "config.clip.straggler_info='gossip'"),
    ("clip.histogram_bins", 1, "histogram bins=1"),
    ("clip.histogram_lo_s", 0.0, "histogram range"),
])
def test_bad_config_values_are_named(key, value, match, tmp_path):
  c = tiny_config("clip_compute")
  section, _, name = key.rpartition(".")
  (c[section] if section else c)[name] = value
  with pytest.raises(ValueError, match=match):
    experiment.run(c, str(tmp_path))


def test_histogram_needs_secagg_and_the_quantile_rule(tmp_path):
  c = tiny_config("clip_compute")
  c.clip.straggler_info, c.secagg.enabled = "histogram", False
  with pytest.raises(ValueError, match="sums the time histograms under SecAgg"):
    experiment.run(c, str(tmp_path))
  c.secagg.enabled, c.reports.rule = True, "plausible"
  with pytest.raises(ValueError, match="reports.rule='plausible'"):
    experiment.run(c, str(tmp_path))


def test_fluid_under_secagg_is_refused(tmp_path):
  c = tiny_config("fluid")
  c.secagg.enabled = True
  with pytest.raises(ValueError, match="cannot run under secure aggregation"):
    experiment.run(c, str(tmp_path))


def test_missing_data_folder_error_names_file_and_folders(tmp_path):
  c = tiny_config("fedavg")
  c.data.data_dir = str(tmp_path / "nowhere")
  with pytest.raises((ValueError, FileNotFoundError)) as err:
    experiment.run(c, str(tmp_path / "run"))
  text = str(err.value)
  assert "femnist" in text and "nowhere" in text


def test_cli_reports_bad_input_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(ROOT / "scripts" / "train.py"), "--config",
       str(ROOT / "configs" / "quickstart.py"), "--workdir", str(tmp_path),
       "--config.method=fedprox"], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode != 0
  assert "error: config.method='fedprox' is not allowed" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_aborted_rounds_at_any_stage_keep_the_model_and_are_charged(tmp_path):
  # Seed 30 with 30% drop-outs and t = n = 4: round 1 aborts at AdvertiseKeys (it used to crash
  # the run), round 2 at MaskedInputCollection, round 3 completes, round 4 aborts again.
  c = tiny_config("fedavg", threshold=4, dropout_rate=0.3)
  c.seed, c.rounds, c.eval_every = 30, 4, 1
  summary = experiment.run(c, str(tmp_path))
  rows = read_rows(tmp_path)
  assert [r.get("aborted_stage") for r in rows] == [
      "advertise_keys", "masked_input", None, "masked_input"]
  assert rows[2]["secagg_survivors"] == 4 and rows[2]["secagg_nonfinite"] == []

  def same(a, b):  # the evaluated model is the same
    return (a["test_accuracy"], a["test_loss"]) == (b["test_accuracy"], b["test_loss"])

  assert same(rows[0], rows[1]) and same(rows[2], rows[3]) and not same(rows[1], rows[2])
  # Aborted rounds cost what their participants did: keys only, then training and upload.
  assert 0 < rows[0]["round_time_s"] < rows[1]["round_time_s"]
  assert rows[0]["aborted_participants"] and all(math.isnan(r["train_loss"]) for r in rows[::3])
  assert rows[3]["virtual_time_s"] == pytest.approx(sum(r["round_time_s"] for r in rows))
  assert summary["aborted_rounds"] == 3
  params = summary["secagg_parameters"]
  assert (params["degree"], params["threshold"], params["source"]) == (3, 4, "explicit")
  assert params["dropout_fraction"] == 0.3 and params["p_leak"] == 0.0


def test_weights_above_the_public_max_weight_stop_the_run(tmp_path):
  c = tiny_config("fedavg", max_weight=20.0)
  with pytest.raises(ValueError, match=r"config.secagg.max_weight.*above max_weight=20.0"):
    experiment.run(c, str(tmp_path))


def test_weak_secagg_parameters_need_the_opt_in(tmp_path):
  c = tiny_config("fedavg", degree=3, threshold=1)
  with pytest.raises(ValueError, match="threshold=1 lets any single share holder"):
    experiment.run(c, str(tmp_path))


def test_cli_reports_a_missing_data_file_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(ROOT / "scripts" / "train.py"), "--config",
       str(ROOT / "configs" / "quickstart.py"), "--workdir", str(tmp_path / "run"),
       f"--config.data.data_dir={tmp_path / 'nowhere'}"], capture_output=True, text=True,
      cwd=ROOT, timeout=300)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert proc.stderr.startswith("error: ") and "nowhere" in proc.stderr


def test_histogram_straggler_info_reads_the_last_secure_sum_and_sends_no_report(tmp_path):
  """`clip.straggler_info=histogram` under SecAgg+ (a ring: k = 2 of 5): no sealed broadcast
  (5 messages, as a round without pruning), the histogram counts round 1's survivors, and the
  upload carries 2 x 96 more words than the reports' run; the decision follows all times."""
  def config(info):
    c = tiny_config("clip_compute", protocol="secagg+", degree=2, threshold=2,
                    allow_weak_parameters=True, simulate="sum")
    c.num_clients, c.devices.compute_slow, c.rounds, c.eval_every = 5, 1, 2, 0
    # Fits here are 0.025-0.05 s and totals 0.28-0.31 s: 96 bins over 0.02-0.4 s (3.2% wide)
    # hold both and put the slow total in a bin of its own.
    c.clip.straggler_info, c.clip.histogram_bins = info, 96
    c.clip.histogram_lo_s, c.clip.histogram_hi_s = 0.02, 0.4
    c.clip.broadcast = "own_message"  # the reports in their own message, against none
    return c

  experiment.run(config("histogram"), str(tmp_path / "h"))
  experiment.run(config("neighbours"), str(tmp_path / "n"))
  h, n = read_rows(tmp_path / "h"), read_rows(tmp_path / "n")
  assert h[1]["histogram_clients"] == h[0]["secagg_survivors"] == 5
  assert "broadcast_bytes" not in h[1] and "broadcast_bytes" in n[1]
  assert h[1]["messages"] == [5] * 5 and n[1]["messages"] == [6] * 5
  upload = lambda rows: np.asarray(rows[0]["upload_s"])  # noqa: E731  round 1: same models
  assert np.all(upload(h) > upload(n))
  # Every client flagged from the histogram is one the all-heard quantile flags; with these bins
  # the one slow device is flagged and prunes, as the all-heard rule says.
  assert set(h[1]["stragglers"]) <= set(h[1]["stragglers_all_heard"])
  assert h[1]["stragglers"] == h[1]["stragglers_all_heard"] == h[1]["true_stragglers"]
  assert h[1]["keep_fraction"][h[1]["stragglers"][0]] < 1.0


def test_reports_inside_share_keys_cost_their_bytes_not_a_message(tmp_path):
  # DESIGN 2.2 (issue 24 item 2): under SecAgg the neighbours' reports ride inside ShareKeys.
  from clipjax import secagg
  from clipjax.clip import stragglers
  rows = {}
  for broadcast in ("share_keys", "own_message"):
    c = tiny_config("clip_compute", degree=3)
    c.clip.straggler_info, c.clip.broadcast = "neighbours", broadcast
    experiment.run(c, str(tmp_path / broadcast))
    rows[broadcast] = read_rows(tmp_path / broadcast)
  inside, own = rows["share_keys"][1], rows["own_message"][1]
  assert own["messages"] == [6] * 4 and inside["messages"] == [5] * 4  # SecAgg's 5 only
  # 4 clients x 3 neighbours: each route carries the 16-byte plaintext, not a 44-byte seal.
  sealed = secagg.sealed_size(stragglers.TIME_REPORT_BYTES)
  assert own["broadcast_bytes"] == 12 * sealed
  assert inside["broadcast_bytes"] == 12 * stragglers.TIME_REPORT_BYTES
  # The same decisions; the round is shorter by one latency (and fewer bytes).
  assert inside["stragglers"] == own["stragglers"] and inside["keep_fraction"] == own["keep_fraction"]
  assert np.all(np.asarray(inside["latency_s"]) < np.asarray(own["latency_s"]))
  assert inside["round_time_s"] < own["round_time_s"]


def test_reports_inside_share_keys_need_secagg():
  c = tiny_config("clip_compute")
  c.secagg.enabled, c.clip.broadcast = False, "share_keys"
  with pytest.raises(ValueError, match="clip.broadcast='share_keys'.*SecAgg is off"):
    config_types.ExperimentSpec.from_config(c)
  c.clip.broadcast = "auto"  # without SecAgg: the reports' own message
  assert config_types.ExperimentSpec.from_config(c).clip.broadcast == "own_message"


def test_planes_upload_follows_the_link_and_is_charged_its_packed_bits(tmp_path, monkeypatch):
  """`clip.upload=planes` (issue 26): the network straggler the histogram flags sends only the
  high plane; every client is charged the bits it sends, against the same round padded, and
  reports its time at full precision."""
  from clipjax import models
  from clipjax.clock import charges as charges_lib
  reported = []  # (round's high-only flags, seconds added to each client's report)
  full_net = charges_lib.PlaneCharges.full_precision_net

  def spy(self, times, charge, num_params):
    out = full_net(self, times, charge, num_params)
    reported.append((~np.asarray(self.low, bool), out - times.report_net))
    return out

  monkeypatch.setattr(charges_lib.PlaneCharges, "full_precision_net", spy)
  from clipjax.clip import histogram as histogram_lib
  from clipjax.secagg import planes

  def config(upload):
    c = tiny_config("clip_network", protocol="secagg+", degree=2, threshold=2,
                    allow_weak_parameters=True, simulate="sum")
    c.num_clients, c.rounds, c.eval_every = 5, 3, 0
    c.devices.compute_slow, c.devices.network_slow = 0, 1
    c.clip.straggler_info, c.clip.histogram_bins = "histogram", 96
    c.clip.histogram_lo_s, c.clip.histogram_hi_s = 0.02, 4.0  # totals here: 0.27-0.5 s
    c.clip.upload = upload
    return c

  for upload in ("padded", "planes"):
    experiment.run(config(upload), str(tmp_path / upload))
  padded, split = read_rows(tmp_path / "padded"), read_rows(tmp_path / "planes")
  spec = config_types.ExperimentSpec.from_config(config("planes"))
  from clipjax.round import build
  data = build.load_data(spec)
  _, params = build.init_model(spec, data.num_classes)
  dim, extra = models.num_params(params), histogram_lib.words(96)
  full = 4.0 * (dim + 1 + extra)
  for r in (1, 2):  # it reports its time at full precision, so it stays a network straggler
    assert split[r]["stragglers"] == split[r]["high_only"] == split[r]["true_stragglers"] == [2]
  # With 5 clients, 1 colluder (20%) and no drop-outs, 4 members keep 3 honest: it runs.
  assert split[1]["secagg_low_survivors"] == 4 and split[1]["secagg_low_aborted"] == ""
  for r in (0, 1, 2):
    high, low = split[r]["plane_rings"]
    assert high == planes.ring_bits(5, "high", 12, 24)
    assert low == planes.ring_bits(5 if r == 0 else 4, "low", 12, 24)
    for u in range(5):
      sends = planes.wire_bytes(dim, high, 1 + extra) + (
          0 if u in split[r].get("high_only", []) else planes.wire_bytes(dim, low))
      # Same round, same jitter, same link: the upload seconds scale as the bytes sent.
      assert split[r]["upload_s"][u] == pytest.approx(padded[r]["upload_s"][u] * sends / full,
                                                      rel=1e-6)
  assert split[1]["round_time_s"] < padded[1]["round_time_s"]  # the straggler set the pace
  assert split[0]["stragglers"] == [] and "high_only" not in split[0]
  # Each round's reports went through the full-precision time: the high-only client's report
  # carries the low plane it skipped (seconds > 0), the others' nothing.
  assert len(reported) == 3
  for skipped, added in reported[1:]:
    assert list(np.flatnonzero(skipped)) == [2] and added[2] > 0 and not added[skipped == 0].any()


@pytest.mark.parametrize("change, match", [
    ({"secagg.enabled": False}, "clip.upload='planes'.*SecAgg is off"),
    ({"clip.straggler_info": "neighbours"}, "set clip.straggler_info='histogram'"),
    ({"clip.high_bits": 24}, r"clip.high_bits=24 must be an integer in \[1, 23\]"),
    ({"clip.aggregation": "participation_weighted"}, "padded aggregation rule"),
])
def test_planes_config_errors_name_the_fix(change, match):
  c = tiny_config("clip_compute")
  c.clip.upload = "planes"
  for key, value in change.items():
    section, leaf = key.split(".")
    c[section][leaf] = value
  with pytest.raises(ValueError, match=match):
    config_types.ExperimentSpec.from_config(c)


def test_planes_mean_nothing_to_a_method_that_decides_no_stragglers():
  c = tiny_config("fedavg")
  c.clip.upload = "planes"
  assert config_types.ExperimentSpec.from_config(c).clip.upload == "padded"


def test_planes_under_verify_agree_with_the_protocol_through_dropouts_and_aborts(tmp_path):
  """Every round runs both instances' protocol and its `sum` simulation (`verify_every=1`):
  they agree bit for bit (else `SimulationMismatch` stops the run), through injected drop-outs
  (a client that drops out drops out of both instances) and an aborted round."""
  c = tiny_config("clip_network", protocol="secagg+", degree=4, threshold=3,
                  allow_weak_parameters=True, verify_every=1, dropout_rate=0.2)
  c.num_clients, c.rounds, c.eval_every = 8, 4, 0
  c.devices.compute_slow, c.devices.network_slow = 0, 1
  c.clip.straggler_info, c.clip.histogram_bins = "histogram", 96
  c.clip.histogram_lo_s, c.clip.histogram_hi_s = 0.02, 4.0
  c.clip.upload = "planes"
  experiment.run(c, str(tmp_path))
  rows = read_rows(tmp_path)
  finished = [r for r in rows if "aborted" not in r]
  assert len(finished) >= 2 and len(finished) < len(rows)  # this seed: one round aborts
  assert all("verify" in r["secagg_seconds"] for r in finished)
  dropped = [r for r in finished if r["secagg_dropped"] > 0]
  assert dropped and all(r["secagg_low_survivors"] == sum(r["survivors"]) - len(
      r.get("high_only", [])) for r in finished)
