"""How all clients' local training is driven: a device-side scan, or a host loop of jitted steps.

Both loops run the same one-client step (`clipjax.fl.local.make_client_step`) on the same
fixed shapes and give the same deltas; they differ in where the loop over local steps lives:

* `"scan"`: one jitted computation, `lax.scan` over steps inside `vmap` (or `lax.map` in
  chunks) over clients. Fine on GPU/TPU.
* `"host"`: a Python loop over client chunks and steps calls ONE jitted, vmapped step for a
  chunk of `client_batch` clients. On XLA:CPU a convolution inside a `while` loop (scan, map,
  fori_loop) runs 6-70x below its speed outside one (DESIGN 2.5), so this is the CPU default.
  The host knows which steps hold no valid example for any client of a chunk (padding: clients
  with fewer examples than the largest) and skips them; they are no-ops in the scan anyway.

Every chunk has the same shape (the last one is filled up with repeats of its first client,
whose results are dropped), so the step compiles once per run.

`scripts/bench_train.py` measures the loops and chunk sizes against PyTorch;
`default_loop` / `default_client_batch` hold the choices those measurements support.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clipjax.fl import local
from clipjax.fl import clients as round_lib

PyTree = Any
LOOPS = ("auto", "host", "scan")

# Clients per jitted step on CPU, measured with scripts/bench_train.py (docs/benchmarks.md):
# XLA:CPU runs a vmapped convolution over per-client weights as a grouped convolution and a
# vmapped dense layer as a batched matmul, both slower per example than one client's step, so
# one client per step is fastest for every model measured there.
CPU_CLIENT_BATCH = {"vgg9": 1, "leaf_cnn": 1, "leaf_lstm": 1}


def default_loop(backend: Optional[str] = None) -> str:
  """`"host"` on CPU, `"scan"` on accelerators (DESIGN 2.5)."""
  return "host" if (backend or jax.default_backend()) == "cpu" else "scan"


def default_client_batch(model_name: str, backend: Optional[str] = None) -> int:
  """Clients per chunk: measured CPU defaults; 0 (all clients at once) on accelerators."""
  if (backend or jax.default_backend()) == "cpu":
    return CPU_CLIENT_BATCH.get(model_name, 1)
  return 0


def _chunk_ids(num_clients: int, chunk: int) -> list[np.ndarray]:
  """Client ids per chunk; the last chunk is filled with repeats of its first id."""
  out = []
  for start in range(0, num_clients, chunk):
    ids = np.arange(start, min(start + chunk, num_clients))
    out.append(np.concatenate([ids, np.full(chunk - len(ids), ids[0])]).astype(np.int32))
  return out


def _step_indices(spec: local.LocalSpec):
  """`(keys, valid) -> (idx, ok, any_ok)`: every client's batch indices per local step, which
  of them hold examples, and which steps do any work ([C, S])."""

  def indices(keys, valid):
    idx, ok = jax.vmap(lambda k, v: local.batch_indices(k, v, spec))(keys, valid)
    return idx, ok, jnp.any(ok, axis=-1)

  return indices


def _group_step(step, batched: bool):
  """Local step `s` of a group of clients: `(carry, data, s) -> carry`. `batched`: the group's
  leading axis is clients (vmapped); else it is one client, un-vmapped."""

  def group_step(carry, data, s):
    xc, yc, idx, ok, prune_mask = data
    b_idx = jax.lax.dynamic_index_in_dim(idx, s, axis=int(batched), keepdims=False)
    b_ok = jax.lax.dynamic_index_in_dim(ok, s, axis=int(batched), keepdims=False)
    if not batched:
      return step(carry, xc, yc, b_idx, b_ok, prune_mask)
    pm_axis = None if prune_mask is None else 0
    return jax.vmap(step, in_axes=(0, 0, 0, 0, 0, pm_axis))(carry, xc, yc, b_idx, b_ok,
                                                            prune_mask)

  return group_step


class HostLoopTrainer:
  """All clients' local training as a host loop over jitted, vmapped chunk steps.

  Call it like `train(params, x, y, valid, keys, prune_mask=None, param_prune_mask=None)`;
  it returns `ClientOutput` with a leading client axis C, exactly what the scan returns.
  The jitted pieces are built once here (this is a driver that lives at the loop's edge,
  not a pure function), so a run compiles each of them once; `compiled_step_count()` tells
  how many times the step was compiled, for tests.
  """

  def __init__(self, apply_fn: local.ApplyFn, batch_fn: local.BatchFn,
               optimizer: optax.GradientTransformation, spec: local.LocalSpec,
               client_batch: int = 1, streams: int = 1):
    if client_batch < 1:
      raise ValueError(f"client_batch must be >= 1 for the host loop, got {client_batch}.")
    if streams < 1:
      raise ValueError(f"streams must be >= 1, got {streams}.")
    self.spec = spec
    self.streams = int(streams)
    self.client_batch = client_batch = int(client_batch)
    init, step, finish = local.make_client_step(apply_fn, batch_fn, optimizer)

    # One client per step runs un-vmapped: a batch-1 vmap turns convs and matmuls into their
    # batched forms and carries a leading axis of 1, together ~2x slower on XLA:CPU (measured).
    batched = client_batch > 1

    def start(params, ids, x, y, idx, ok, prune_mask):
      take = lambda a: jnp.take(a, ids, axis=0) if batched else a[ids[0]]  # noqa: E731
      data = (take(x), take(y), take(idx), take(ok), jax.tree.map(take, prune_mask))
      carry = jax.vmap(lambda _: init(params))(ids) if batched else init(params)
      return carry, data

    def end(carries, params, param_prune_mask, num):
      # One pass over every chunk's trained parameters: stack (or concatenate), subtract the
      # global parameters, mask; XLA fuses it, so no per-chunk delta is ever stored.
      join = (lambda *a: jnp.concatenate(a)[:num]) if batched else (lambda *a: jnp.stack(a))
      carry = jax.tree.map(join, *carries)
      ppm_axis = None if param_prune_mask is None else 0
      return jax.vmap(finish, in_axes=(0, None, ppm_axis))(carry, params, param_prune_mask)

    self._indices = jax.jit(_step_indices(spec))
    self._start = jax.jit(start)
    self._step = jax.jit(_group_step(step, batched))  # donating the carry measured slower
    self._end = jax.jit(end, static_argnums=3)

  def compiled_step_count(self) -> int:
    return self._step._cache_size()  # pylint: disable=protected-access

  def __call__(self, params, x, y, valid, keys, prune_mask=None, param_prune_mask=None
               ) -> local.ClientOutput:
    num_clients = x.shape[0]
    spread = len(getattr(getattr(x, "sharding", None), "device_set", ()) or ())
    if spread > 1:  # slicing one client out of a sharded axis deadlocks XLA:CPU's collectives
      raise ValueError(f"the host loop got clients sharded over {spread} devices; build it with "
                       "make_trainer(..., mesh=<their mesh>) (scale.shard_devices does this).")
    idx, ok, any_ok = self._indices(keys, valid)
    active = np.asarray(jax.device_get(any_ok))  # [C, S]: which steps do any work
    chunks = _chunk_ids(num_clients, self.client_batch)
    carries = []
    for first in range(0, len(chunks), self.streams):
      # `streams` chunks in flight: their steps are dispatched in turn, and with asynchronous
      # dispatch independent chains can run at once on several cores.
      group = chunks[first:first + self.streams]
      state = [self._start(params, jnp.asarray(ids), x, y, idx, ok, prune_mask) for ids in group]
      steps = [set(np.flatnonzero(active[ids].any(axis=0)).tolist()) for ids in group]
      for s in sorted(set().union(*steps)):
        for j, (carry, data) in enumerate(state):
          if s in steps[j]:
            state[j] = (self._step(carry, data, np.int32(s)), data)
      carries += [carry for carry, _ in state]
    return self._end(tuple(carries), params, param_prune_mask, num_clients)


class ShardedHostLoopTrainer:
  """The host loop over a client axis sharded over the devices of `mesh` (DESIGN 2.9).

  The C clients (C a multiple of the device count d) lie in d blocks of m = C / d, one block per
  device. Every jitted piece is a `shard_map` over the mesh: each device runs the one-client
  step, vmapped over `client_batch` of ITS OWN clients, on its own block, so no step moves a
  client's data between devices and no program holds a collective (XLA:CPU's in-process
  collectives deadlock when a sliced, sharded client axis makes the partitioner add them).
  Every call is issued for all devices alike (the host skips a step only when no client of the
  group on any device has work in it), and the results come back in client order.

  The deltas equal the unsharded host loop's up to the order of floating-point reductions.
  """

  def __init__(self, apply_fn: local.ApplyFn, batch_fn: local.BatchFn,
               optimizer: optax.GradientTransformation, spec: local.LocalSpec, mesh,
               client_batch: int = 1):
    if client_batch < 0:
      raise ValueError(f"client_batch must be >= 0 (0: all of a device's clients at once), got "
                       f"{client_batch}.")
    self.spec, self.mesh, self.client_batch = spec, mesh, int(client_batch)
    self.shards = int(mesh.devices.size)
    init, step, finish = local.make_client_step(apply_fn, batch_fn, optimizer)
    clients, same = jax.sharding.PartitionSpec("clients"), jax.sharding.PartitionSpec()
    local_map = lambda f, ins, outs: jax.shard_map(  # noqa: E731
        f, mesh=mesh, in_specs=ins, out_specs=outs, check_vma=False)

    def start(params, first, x, y, idx, ok, prune_mask, size):
      def one_device(params, first, x, y, idx, ok, prune_mask):
        take = lambda a: jax.lax.dynamic_slice_in_dim(a, first, size, axis=0)  # noqa: E731
        data = (take(x), take(y), take(idx), take(ok), jax.tree.map(take, prune_mask))
        return jax.vmap(lambda _: init(params))(data[1]), data
      return local_map(one_device, (same, same, clients, clients, clients, clients, clients),
                       clients)(params, first, x, y, idx, ok, prune_mask)

    def end(carries, params, param_prune_mask):
      def one_device(carries, params, param_prune_mask):
        carry = jax.tree.map(lambda *parts: jnp.concatenate(parts), *carries)  # block order
        ppm_axis = None if param_prune_mask is None else 0
        return jax.vmap(finish, in_axes=(0, None, ppm_axis))(carry, params, param_prune_mask)
      return local_map(one_device, (clients, same, clients), clients)(
          carries, params, param_prune_mask)

    self._indices = jax.jit(local_map(_step_indices(spec), (clients, clients), clients))
    self._start = jax.jit(start, static_argnums=7)
    self._step = jax.jit(local_map(_group_step(step, batched=True), (clients, clients, same),
                                   clients))
    self._end = jax.jit(end)

  def compiled_step_count(self) -> int:
    return self._step._cache_size()  # pylint: disable=protected-access

  def __call__(self, params, x, y, valid, keys, prune_mask=None, param_prune_mask=None
               ) -> local.ClientOutput:
    num_clients = x.shape[0]
    if num_clients % self.shards:
      raise ValueError(f"{num_clients} clients do not split over {self.shards} devices; pad the "
                       "chunk's client axis to a multiple of the device count.")
    per_device = num_clients // self.shards
    size = self.client_batch or per_device  # clients per device and step
    size = size if per_device % size == 0 else 1
    idx, ok, any_ok = self._indices(keys, valid)
    active = np.asarray(jax.device_get(any_ok)).reshape(self.shards, per_device, -1)
    carries = []
    for first in range(0, per_device, size):
      carry, data = self._start(params, np.int32(first), x, y, idx, ok, prune_mask, size)
      for s in np.flatnonzero(active[:, first:first + size].any(axis=(0, 1))):
        carry = self._step(carry, data, np.int32(s))
      carries.append(carry)
    return self._end(tuple(carries), params, param_prune_mask)


def make_trainer(apply_fn: local.ApplyFn, batch_fn: local.BatchFn,
                 optimizer: optax.GradientTransformation, spec: local.LocalSpec, *,
                 loop: str = "auto", client_batch: int = 0, streams: int = 1,
                 mesh=None) -> Callable[..., local.ClientOutput]:
  """All clients' local training: `train(params, x, y, valid, keys, prune_mask=None,
  param_prune_mask=None) -> ClientOutput` with a leading client axis.

  Args:
    apply_fn, batch_fn, optimizer, spec: as for `local.make_client_update`.
    loop: `"host"`, `"scan"` or `"auto"` (`default_loop()`).
    client_batch: clients per vmapped chunk; 0 vmaps all clients at once.
    streams: host loop only: chunks whose steps are dispatched in turn (in flight at once).
    mesh: a `jax.sharding.Mesh` with axis "clients" the client axis is sharded over (None: one
      device); the host loop then trains each device's own clients in every step
      (`ShardedHostLoopTrainer`; `client_batch` is then per device).

  Raises:
    ValueError: for an unknown loop or a negative client_batch.
  """
  if loop not in LOOPS:
    raise ValueError(f"local loop {loop!r} is unknown; use one of {', '.join(LOOPS)}.")
  if client_batch < 0:
    raise ValueError(f"client_batch must be >= 0 (0: all clients at once), got {client_batch}.")
  loop = default_loop() if loop == "auto" else loop
  if loop == "host":
    if mesh is not None and mesh.devices.size > 1:
      return ShardedHostLoopTrainer(apply_fn, batch_fn, optimizer, spec, mesh, client_batch)
    if client_batch == 0:
      return _HostAll(apply_fn, batch_fn, optimizer, spec)
    return HostLoopTrainer(apply_fn, batch_fn, optimizer, spec, client_batch, streams)
  client_update = local.make_client_update(apply_fn, batch_fn, optimizer, spec)
  return jax.jit(lambda params, x, y, valid, keys, prune_mask=None, param_prune_mask=None:
                 round_lib.train_clients(client_update, params, x, y, valid, keys, prune_mask,
                                         param_prune_mask, client_batch=client_batch or None))


class _HostAll:
  """The host loop with every client in one chunk (client_batch=0), sized at the first call."""

  def __init__(self, *args):
    self._args = args
    self._trainer = None

  def compiled_step_count(self) -> int:
    return 0 if self._trainer is None else self._trainer.compiled_step_count()

  def __call__(self, params, x, *rest, **kw):
    if self._trainer is None:
      self._trainer = HostLoopTrainer(*self._args, client_batch=x.shape[0])
    return self._trainer(params, x, *rest, **kw)
