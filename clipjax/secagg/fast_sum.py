"""``secagg.simulate=sum``: the secure sum's exact result without keys, shares or masks.

In the protocol every blind cancels: the unmasked field sum is ``sum_{u in U3} q_u`` (mod 2^32),
whatever keys the clients drew. Everything else the round reveals is decided by public facts
(the graph, the drop-out spec, the threshold, who has a finite update). So the simulator can
reproduce each output of :class:`clipjax.secagg.SecureSumStream` without the cryptography:

* AdvertiseKeys: the same setup (``setup_round(..., simulate="sum")``): the seed's graph and
  drop-outs, U1 and its abort test, but no key pairs (a caller that asks for a pairwise key
  gets the pair drawn on first use; CLIP's sealed time broadcast asks for none under ``sum``:
  :mod:`clipjax.clip.broadcast` delivers the reports as opening them would, and compares its
  deliveries with :func:`check_same_fields` on verify rounds).
* ShareKeys: :func:`clipjax.secagg.stages.plan_shares`, the function the protocol itself decides
  with: U2, ``too_few_holders``, the abort and the traffic; no self-mask seeds, no Shamir
  shares, no AES-GCM.
* MaskedInputCollection: each chunk runs the protocol's jitted encoder
  (:func:`clipjax.secagg.blinding.encode_rows`, one executable for both: a re-written encoder
  may be compiled with other fused multiply-adds and round differently), with the same
  stochastic-rounding key per client; its codes are summed as they are, not blinded: one
  ChaCha20 stream per sender (its rounding noise) instead of 2 + k/2 (the noise, the self mask
  and its share of the pairwise masks, each expanded once). U3, ``nonfinite`` and the abort come
  from :func:`clipjax.secagg.stages.collect_masked_inputs`, as in the protocol.
* Unmasking: :func:`clipjax.secagg.stages.plan_unmasking` (U4, the per-secret share counts, the
  aborts and the traffic); no reconstruction, and nothing to unblind: the total already is the
  encoded sum, decoded as the protocol decodes it. (The protocol's check of each rebuilt
  masking key against its advertised public key, which honest clients always pass, has no
  counterpart.)

The result (aggregate, encoded sum, survivors, drop-outs per stage, aborts with their stage and
participants, ``nonfinite``, ``too_few_holders``, bytes per client per stage) is bit-identical
to the protocol's; only the simulator's host seconds differ (the same ``seconds`` keys, timing
the work ``sum`` does). The virtual clock charges the clients' protocol work either way: it
reads the graph (streams per client) and the abort stage, not the simulator. A real deployment
runs the protocol and reveals this same sum, so its privacy is what the protocol gives.

``simulate="verify"`` runs the protocol and a ``sum`` twin on the same updates and raises
:class:`SimulationMismatch` on the first field that differs (:func:`check_same`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from clipjax.secagg.protocol import STAGES, RoundAborted

_ABORT_FIELDS = ("stage", "participants", "nonfinite", "too_few_holders")
_RESULT_FIELDS = ("encoded_sum", "total", "weight_total", "mean", "survivors", "dropped",
                  "nonfinite", "too_few_holders")


class SimulationMismatch(RuntimeError):
  """``simulate=sum`` and the protocol gave different outcomes for one round (a bug)."""


def outcome(run: Callable[[], Any]) -> Any:
  """``run()``, or the :class:`RoundAborted` it raised."""
  try:
    return run()
  except RoundAborted as err:
    return err


def _same(a, b) -> bool:
  """Bit-for-bit equality: arrays by dtype, shape and bytes; floats by their bits."""
  if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
  if isinstance(a, float) or isinstance(b, float):
    return type(a) is type(b) and np.float64(a).tobytes() == np.float64(b).tobytes()
  return a == b


def _fields(found) -> list[tuple[str, Any]]:
  """(name, value) of what an outcome reveals, in the order they are compared."""
  if isinstance(found, RoundAborted):
    return [(name, getattr(found, name)) for name in _ABORT_FIELDS] + [("message", str(found))]
  if not hasattr(found, "encoded_sum"):  # a stage that went through: its record is compared later
    return []
  out = [(name, getattr(found, name)) for name in _RESULT_FIELDS]
  for stage in STAGES:
    out.append((f"stats.bytes_sent[{stage}]", found.stats.bytes_sent[stage]))
    out.append((f"stats.bytes_received[{stage}]", found.stats.bytes_received[stage]))
  out.append(("setup.server.masked_ids", found.setup.server.masked_ids))
  return out


def difference(protocol, fast) -> str | None:
  """The first thing in which two outcomes of one stage differ (None if none).

  Args:
    protocol, fast: what the protocol and ``sum`` gave: a :class:`RoundAborted`, a
      :class:`clipjax.secagg.SecureSumResult`, or any other record of a stage that went through.
  """
  if isinstance(protocol, RoundAborted) != isinstance(fast, RoundAborted):
    say = lambda x: (f"aborted at {x.stage}" if isinstance(x, RoundAborted)  # noqa: E731
                     else "went on")
    return f"outcome (protocol {say(protocol)}, sum {say(fast)})"
  for (name, a), (_, b) in zip(_fields(protocol), _fields(fast)):
    if not _same(a, b):
      return name
  return None


def check_same(round_index: int, protocol, fast) -> None:
  """Raises :class:`SimulationMismatch` (one line) if ``sum``'s outcome differs from the
  protocol's (see :func:`difference`)."""
  _stop_on(round_index, difference(protocol, fast))


def check_same_fields(round_index: int, protocol: Sequence[tuple[str, Any]],
                      fast: Sequence[tuple[str, Any]]) -> None:
  """:func:`check_same` for another record of the round that ``sum`` simulates without its
  cryptography (CLIP's time reports): ``(name, value)`` pairs in the order they are compared.

  Raises:
    SimulationMismatch: (one line) naming the first field whose values differ in any bit.
  """
  _stop_on(round_index, next((name for (name, a), (_, b) in zip(protocol, fast)
                              if not _same(a, b)), None))


def _stop_on(round_index: int, field: str | None) -> None:
  if field is not None:
    raise SimulationMismatch(f"secagg round_index {round_index}: simulate='sum' differs from "
                             f"the protocol in {field} (caught by verify)")
