"""Keep-fraction solver against the real FLOP functions of the models (DESIGN 2.3)."""

import numpy as np
import pytest

from clipjax.clip import invariance
from clipjax.clip import keep as keep_lib
from clipjax.models import flops, get_model


@pytest.mark.parametrize("name,width", [("leaf_cnn", 0.25), ("leaf_cnn", 1.0), ("vgg9", 0.5),
                                        ("leaf_lstm", 0.25)])
def test_keep_fraction_is_largest_affordable_p_and_monotone(name, width):
  model = get_model(name, width=width)
  fraction = lambda p: flops.flop_fraction(model, p)  # noqa: E731
  table = keep_lib.make_flop_table(fraction, p_min=0.5, layer_sizes=model.width_dict)
  rho_min = keep_lib.default_rho_min(fraction, 0.5)
  rhos = np.linspace(rho_min, 1.0, 97)
  p = np.asarray(keep_lib.keep_fraction_from_table(rhos, table))
  assert np.all(np.diff(p) >= 0)
  assert p[0] == pytest.approx(0.5) and p[-1] == 1.0
  for rho, pk in zip(rhos, p):
    # Affordable: the kept sub-network's real FLOPs fit the budget (float32 table rounding).
    kept = {k: int(invariance.kept_units(n, pk)) for k, n in model.width_dict.items()}
    assert flops.forward_flops(model, kept) <= rho * flops.forward_flops(model) * (1 + 1e-5)
  # Interior layers scale ~p^2, so p must exceed rho well inside the range (never p = rho).
  mid = len(rhos) // 2
  assert p[mid] > rhos[mid] + 0.05
