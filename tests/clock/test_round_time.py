"""Round-time rules: finished rounds, aborted rounds, recomputation from metrics."""

import numpy as np
import pytest

from clipjax.clock import devices, round_time


def test_round_time_ignores_dropped_clients():
  times = devices.ClientTimes(*(np.zeros(3),) * 5, total=np.array([1.0, 9.0, 2.0]),
                              fit_full=np.zeros(3))
  assert round_time.round_time(times, server_s=0.5) == 9.5
  assert round_time.round_time(times, np.array([True, False, True]), server_s=0.5) == 2.5
  with pytest.raises(ValueError, match="surviving"):
    round_time.round_time(times, np.zeros(3, bool))


def test_an_aborted_round_charges_its_participants_for_the_work_done():
  class Times:  # per-client components, as devices.ClientTimes
    download = np.array([1.0, 1.0, 1.0])
    fit = np.array([10.0, 20.0, 40.0])
    blinding = np.array([2.0, 2.0, 2.0])
    upload = np.array([5.0, 5.0, 5.0])
    latency = np.array([0.5, 0.5, 0.5])
    total = download + fit + blinding + upload + latency

  def cost(stage, participants):
    return round_time.aborted_round_seconds(Times, stage, participants, 0.25)

  assert cost("advertise_keys", [0, 1, 2]) == 1.0 + 0.5 + 0.25      # nobody trained yet
  assert cost("share_keys", [0, 1]) == 1.0 + 20.0 + 0.5 + 0.25      # trained, did not upload
  assert cost("masked_input", [0, 2]) == Times.total[2] + 0.25
  assert cost("unmasking", [1]) == Times.total[1] + 0.25
  assert cost("unmasking", []) == 0.25
