"""SecAgg host stages one at a time: the seeds Unmasking rebuilds are the ones the senders used."""

import numpy as np

from clipjax import secagg
from clipjax.secagg import params, stages


def test_unmasking_rebuilds_exactly_the_seeds_the_senders_blinded_with():
  n = 8
  setup = secagg.setup_round(
      n, protocol="secagg", seed=2, threat=params.ThreatModel(dropout_fraction=0.5),
      dropouts=secagg.Dropouts(share_keys=[0], masked_input=[3], unmasking=[5]))
  shared = stages.share_keys(setup)
  finite = np.ones(n, bool)
  finite[6] = False
  masking = stages.masking_keys(setup, shared, finite, message_words=5)
  assert shared.clients == (1, 2, 3, 4, 5, 6, 7) and masking.nonfinite == (6,)
  assert masking.senders == (1, 2, 4, 5, 7)
  unmasking = stages.unmasking_keys(setup, shared, masking)
  assert unmasking.revealers == (1, 2, 4, 7)
  np.testing.assert_array_equal(unmasking.self_keys, masking.self_keys)
  # The pairwise streams between a sender and a client that sent nothing (3 and 6) stay in the
  # sum; each must come back with the sign the sender added it with (minus for the upper end).
  rows = len(masking.senders)
  cut = (masking.edge_lo == rows) | (masking.edge_hi == rows)
  blinded = sorted((key.tobytes(), bool(lo == rows))
                   for key, lo in zip(masking.edge_keys[cut], masking.edge_lo[cut]))
  rebuilt = sorted((key.tobytes(), bool(neg))
                   for key, neg in zip(unmasking.edge_keys, unmasking.edge_negated))
  assert len(blinded) == 2 * rows and rebuilt == blinded
  assert {neg for _, neg in rebuilt} == {False, True}
