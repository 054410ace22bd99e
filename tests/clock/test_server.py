"""The server's seconds (clipjax/clock/server.py) by hand."""

import numpy as np
import pytest

from clipjax import secagg
from clipjax.clock import charges, server


def test_unmasking_counts_by_hand():
  # A ring of 6: client 2 shared its keys then dropped; 5 never shared (and also dropped).
  ring = [((u - 1) % 6, (u + 1) % 6) for u in range(6)]
  secrets, streams = server.unmasking_counts(ring, sharers=[0, 1, 2, 3, 4],
                                             survivors=[0, 1, 3, 4])
  # Rebuilt: 4 survivors' self-mask seeds + client 2's mask key; client 2's pairwise masks
  # with its surviving neighbours 1 and 3. Client 5 never shared: nothing of it is in the sum.
  assert (secrets, streams) == (5, 2)


def test_server_parts_and_seconds_by_hand():
  parts = server.server_parts(survivors=4, words=1001, secure=True, threshold=3, secrets=5,
                              pair_streams=2)
  assert parts == {"aggregate": 4 * 1001, "unmask_prg": 6 * 1001 * 64,
                   "shamir": 5 * 9 * 100 + 2 * 2 ** 17, "fluid": 0.0}
  total, each = server.seconds(parts, ops_per_s=1e6, fixed_s=0.5)
  assert each["unmask_prg"] == pytest.approx(6 * 1001 * 64 / 1e6)
  assert total == pytest.approx(0.5 + sum(parts.values()) / 1e6)
  assert server.seconds(parts, ops_per_s=0.0, fixed_s=0.5) == (0.5, dict.fromkeys(parts, 0.0))
  clear = server.server_parts(survivors=4, words=0, secure=False, fluid_voters=3,
                              num_params=1000)
  assert clear["unmask_prg"] == clear["shamir"] == 0 and clear["fluid"] == 3 * 1000 * 4
  with pytest.raises(ValueError, match="ops_per_s"):
    server.seconds(parts, ops_per_s=-1.0)


def test_work_of_a_secagg_round_with_a_dropped_sharer():
  setup = secagg.setup_round(6, protocol="secagg+", degree=2, threshold=2, seed=0,
                             round_index=0, simulate="sum", allow_weak=True)
  charger = charges.RoundCharger(secagg_on=True, upload_vectors=1, server_prunes=False,
                                 histogram_words=8)
  survivors = np.array([True, True, False, True, True, True])
  parts = server.work(charger, np.full(6, 100), 100, setup, survivors)
  dropped_neighbours = sum(survivors[v] for v in setup.neighbours(2))
  assert dropped_neighbours == 2  # a ring: both of client 2's neighbours survive
  words = 101 + 8
  assert parts["aggregate"] == 5 * words
  assert parts["unmask_prg"] == (5 + 2) * words * 64
  assert parts["shamir"] == 6 * 2 * 2 * 100 + 2 * 2 ** 17


def test_the_low_instance_is_unmasked_and_summed_too():
  # issue 26: the server's work with planes is the high instance's plus the low one's.
  charger = charges.RoundCharger(secagg_on=True, upload_vectors=1, server_prunes=False)
  high = secagg.setup_round(6, protocol="secagg", seed=0, simulate="sum")
  low = secagg.setup_round(4, protocol="secagg", seed=1, simulate="sum")
  survivors, low_survivors = np.ones(6, bool), np.array([True, True, False, True])
  one = server.work(charger, np.full(6, 10), 10, high, survivors)
  two = server.work(charger, np.full(6, 10), 10, high, survivors, low=(low, low_survivors))
  alone = server.work(charger, np.full(4, 10), 10, low, low_survivors)
  for part in ("aggregate", "unmask_prg", "shamir"):
    assert two[part] == pytest.approx(one[part] + alone[part])
