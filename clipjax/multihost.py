"""Several processes (hosts) running one experiment together (DESIGN 2.9).

Every process runs the same loop on the same config. Each round's cohort is split into P
contiguous slices, one per process; a process trains and sums only its slice, chunk by chunk.
Everything else a round does is either a pure function of (seed, round) that every process
computes alike (the cohort, the public SecAgg graph and drop-outs, the keep fractions) or is
exchanged here: small host objects (SecAgg key material for the other processes' clients, the
clients' metrics and invariance state, the round's outcome) go through the key-value store of
`jax.distributed`; nothing of size C x D ever does. Process 0 holds the SecAgg server side and
writes the outputs and the checkpoints; every process holds the whole run state, so on restart
each restores process 0's checkpoint from the shared workdir (`clipjax.experiment`).

  procs = multihost.initialize("host0:1234", num_processes=2, process_id=0)

With one process, `SINGLE`, every exchange is the identity and no runtime is started.
"""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from typing import Any

import numpy as np

_TIMEOUT_MS = 30 * 60 * 1000   # a round's slowest process may take long on CPU


@dataclasses.dataclass(eq=False)  # identity: one per process, a safe default value
class Processes:
  """This process's place among P processes.

  Attributes:
    index: this process, 0..P-1 (0 holds the SecAgg server side and writes outputs).
    count: P.
  """

  index: int = 0
  count: int = 1
  _tags: Any = dataclasses.field(default_factory=itertools.count, repr=False)

  @property
  def is_lead(self) -> bool:
    return self.index == 0

  def rows(self, num: int, index: int | None = None) -> np.ndarray:
    """The rows 0..num-1 of process `index` (default this one): contiguous, balanced."""
    index = self.index if index is None else index
    bounds = np.linspace(0, num, self.count + 1).round().astype(int)
    return np.arange(bounds[index], bounds[index + 1])

  def _client(self):
    from jax._src import distributed  # the runtime's key-value store (no public accessor)
    client = distributed.global_state.client
    if client is None:
      raise RuntimeError("jax.distributed is not initialised; call multihost.initialize first")
    return client

  def allgather(self, obj: Any) -> list:
    """Every process's `obj`, in process order (a collective: all processes must call it)."""
    if self.count == 1:
      return [obj]
    tag = f"clipjax/{next(self._tags)}"
    client = self._client()
    client.key_value_set_bytes(f"{tag}/{self.index}", pickle.dumps(obj))
    out = [pickle.loads(client.blocking_key_value_get_bytes(f"{tag}/{p}", _TIMEOUT_MS))
           for p in range(self.count)]
    client.wait_at_barrier(f"{tag}/read", _TIMEOUT_MS)  # every value read: safe to delete
    client.key_value_delete(f"{tag}/{self.index}")
    return out

  def broadcast(self, obj: Any) -> Any:
    """Process 0's `obj` on every process (a collective)."""
    if self.count == 1:
      return obj
    return self.allgather(obj if self.is_lead else None)[0]

  def scatter(self, parts: dict[int, Any] | None) -> Any:
    """Process 0's `parts[p]` on process p alone, None where it has none (a collective).

    Unlike `broadcast`, no process receives what is meant for another: process 0 hands each
    process only its own clients' SecAgg key material this way.
    """
    if self.count == 1:
      return None if parts is None else parts.get(0)
    tag = f"clipjax/{next(self._tags)}"
    client = self._client()
    if self.is_lead:
      for p in range(1, self.count):
        client.key_value_set_bytes(f"{tag}/to/{p}", pickle.dumps((parts or {}).get(p)))
      mine = (parts or {}).get(0)
    else:
      mine = pickle.loads(client.blocking_key_value_get_bytes(f"{tag}/to/{self.index}",
                                                              _TIMEOUT_MS))
    client.wait_at_barrier(f"{tag}/read", _TIMEOUT_MS)
    if self.is_lead:
      for p in range(1, self.count):
        client.key_value_delete(f"{tag}/to/{p}")
    return mine


SINGLE = Processes()


def initialize(coordinator: str, num_processes: int, process_id: int) -> Processes:
  """Starts `jax.distributed` (CPU collectives over gloo) and returns this process's place.

  Raises:
    ValueError: for a process id outside [0, num_processes).
  """
  if not 0 <= process_id < num_processes:
    raise ValueError(f"process_id={process_id} must be in [0, {num_processes}).")
  import jax
  if num_processes == 1:
    return SINGLE
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
  return Processes(jax.process_index(), jax.process_count())
